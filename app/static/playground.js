// The playground: a client of the public API like any other (api.js). It lists the model,
// streams one chat completion with every round's drafts, and shows what arrives.
// Model text is only ever set as textContent, never parsed as HTML.

import { ApiError, getJSON, streamChat } from "./api.js";

const KEY_STORAGE = "aft-playground-api-key";
const $ = (id) => document.getElementById(id);

let controller = null; // the running request's AbortController; Stop aborts it

function formatTime(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// A draft's first reasoning piece starts with its heading (app/reasoning.py): "### Round r · draft k".
const DRAFT_HEADING = /^(?:\n\n)?### Round (\d+) · draft (\d+)\n/;

function roundName(round, rounds) {
  if (round === rounds) return "answer";
  return round === 0 ? "proposals" : "aggregations";
}

/** What one request shows: a row of draft columns per round, the answer, the usage table. */
class RunView {
  constructor(proposals, rounds) {
    this.rounds = rounds;
    this.started = performance.now();
    this.roundEnds = []; // performance.now() at which each round ended, the answer's last
    this.firstToken = null;
    this.writing = null; // the .text of the draft the reasoning is writing
    this.container = $("rounds-view");
    this.container.replaceChildren();
    for (let round = 0; round < rounds; round++) this.addRound(round, proposals);
    $("answer").textContent = "";
    $("answer-view").hidden = rounds > 0; // shown once the answer starts
    $("usage").tBodies[0].replaceChildren();
    $("usage-view").hidden = true;
    $("early-exit").hidden = true;
    this.status(rounds > 0 ? `round 0: writing ${proposals} drafts…` : "writing the answer…");
  }

  status(text) {
    $("status").textContent = text;
  }

  addRound(round, count) {
    const section = document.createElement("section");
    section.className = "round";
    section.dataset.round = String(round);
    const title = document.createElement("h2");
    title.textContent = `Round ${round} · ${roundName(round, this.rounds)}`;
    const drafts = document.createElement("div");
    drafts.className = "drafts";
    section.append(title, drafts);
    this.container.append(section);
    this.setColumns(drafts, count);
  }

  setColumns(drafts, count) {
    while (drafts.children.length < count) {
      const draft = document.createElement("article");
      draft.className = "draft pending";
      const heading = document.createElement("h3");
      heading.textContent = `Draft ${drafts.children.length + 1}`;
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = "writing…";
      draft.append(heading, text);
      drafts.append(draft);
    }
    while (drafts.children.length > count) drafts.lastElementChild.remove();
  }

  /** A piece of the reasoning (`aft.reasoning`): the drafts as they are written, the first live. */
  appendDraft(piece) {
    const heading = DRAFT_HEADING.exec(piece);
    if (heading) {
      const drafts = this.container.querySelector(`.round[data-round="${heading[1]}"] .drafts`);
      const draft = drafts ? drafts.children[Number(heading[2]) - 1] : undefined;
      this.writing = draft ? draft.querySelector(".text") : null;
      if (this.writing) this.writing.textContent = "";
      piece = piece.slice(heading[0].length);
    }
    if (this.writing) this.writing.append(piece);
  }

  /** Round `round` finished with these drafts. */
  fillRound(round, outputs) {
    const drafts = this.container.querySelector(`.round[data-round="${round}"] .drafts`);
    if (!drafts) return;
    this.setColumns(drafts, outputs.length);
    outputs.forEach((output, i) => {
      const draft = drafts.children[i];
      draft.classList.remove("pending");
      draft.querySelector(".text").textContent = output;
    });
    this.roundEnds[round] = performance.now();
    const next = round + 1;
    this.status(next < this.rounds ? `round ${next}: aggregating…` : "writing the answer…");
  }

  appendAnswer(text) {
    if (this.firstToken === null) {
      this.firstToken = performance.now();
      $("answer-view").hidden = false;
    }
    $("answer").append(text);
  }

  finish(reason) {
    this.roundEnds[this.rounds] = performance.now();
    const total = formatTime(this.roundEnds[this.rounds] - this.started);
    const first = this.firstToken === null ? "" : `, first answer token after ${formatTime(this.firstToken - this.started)}`;
    this.status(`done in ${total} (finish_reason: ${reason})${first}`);
  }

  /** The answer is the draft that round `round`'s drafts agreed on (`aft.early_exit`): say so, and
   *  mark the rounds that never ran. */
  showEarlyExit(round) {
    const note = $("early-exit");
    note.textContent = `Early exit: the drafts of round ${round} agreed, so the answer is their draft; ` +
      "no later round and no final aggregation ran.";
    note.hidden = false;
    for (const section of this.container.querySelectorAll(".round")) {
      if (Number(section.dataset.round) <= round) continue;
      section.classList.add("skipped");
      for (const text of section.querySelectorAll(".draft.pending .text")) text.textContent = "not run";
    }
  }

  /** The last chunk: usage in total and, per round, from `aft.answers[0].usage_by_round`. */
  showUsage(usage, aft) {
    const answer = aft && Array.isArray(aft.answers) ? aft.answers[0] : null;
    if (answer && Number.isInteger(answer.early_exit_round)) this.showEarlyExit(answer.early_exit_round);
    const body = $("usage").tBodies[0];
    const row = (cells) => {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.append(td);
      }
      body.append(tr);
    };
    for (const u of answer ? answer.usage_by_round : []) {
      const end = this.roundEnds[u.round];
      const start = u.round === 0 ? this.started : this.roundEnds[u.round - 1];
      const time = end !== undefined && start !== undefined ? formatTime(end - start) : "";
      row([u.round, roundName(u.round, this.rounds), u.requests, u.prompt_tokens, u.completion_tokens,
        u.total_tokens, time]);
    }
    const end = this.roundEnds[this.rounds];
    row(["all", "", "", usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
      end === undefined ? "" : formatTime(end - this.started)]);
    body.lastElementChild.className = "total";
    $("usage-view").hidden = false;
  }

  /** One chat.completion.chunk. */
  apply(chunk) {
    if (chunk.aft && Array.isArray(chunk.aft.outputs)) this.fillRound(chunk.aft.round, chunk.aft.outputs);
    for (const choice of chunk.choices || []) {
      if (choice.index !== 0) continue; // the page asks for one answer
      if (choice.delta && choice.delta.reasoning) this.appendDraft(choice.delta.reasoning);
      if (choice.delta && choice.delta.content) this.appendAnswer(choice.delta.content);
      if (choice.finish_reason) this.finish(choice.finish_reason);
    }
    if (chunk.usage) this.showUsage(chunk.usage, chunk.aft);
  }
}

function showError(error) {
  const box = $("error");
  box.textContent = error instanceof ApiError ? error.toString() : `Error: ${error.message || error}`;
  box.hidden = false;
}

function setRunning(running) {
  $("send").disabled = running;
  $("stop").disabled = !running;
}

async function ask() {
  $("error").hidden = true;
  const proposals = Number($("proposals").value);
  const rounds = Number($("rounds").value);
  controller = new AbortController();
  const { signal } = controller;
  setRunning(true);
  const view = new RunView(proposals, rounds);
  const key = $("api-key").value.trim();
  try {
    const models = await getJSON("v1/models", key, signal);
    const model = models.data[0].id;
    $("model").textContent = `model: ${model}`;
    view.started = performance.now();
    const request = {
      model,
      messages: [{ role: "user", content: $("question").value }],
      stream_options: { include_usage: true },
      aft: { proposals, rounds, include_proposals: true, reasoning: true },
    };
    for await (const chunk of streamChat(request, key, signal)) view.apply(chunk);
  } catch (error) {
    if (error.name === "AbortError") {
      view.status("stopped");
    } else {
      view.status("failed");
      showError(error);
    }
  } finally {
    controller = null;
    setRunning(false);
  }
}

async function init() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("input", () => localStorage.setItem(KEY_STORAGE, key.value));
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  try {
    const config = await getJSON("playground/config", null);
    for (const [id, value, max] of [["proposals", config.proposals, config.max_proposals],
      ["rounds", config.rounds, config.max_rounds]]) {
      $(id).value = value;
      $(id).max = max;
    }
    $("key-hint").hidden = !config.api_key_required;
  } catch (error) {
    showError(error);
  }
  document.body.dataset.ready = "true"; // the form holds the server's defaults now
}

init();

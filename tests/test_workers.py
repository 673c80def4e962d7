"""Generation in worker processes: the same steps as in-process, early close frees the worker, errors stay local."""

import dataclasses
import pickle

import pytest
import torch

from workbench import GPT, GPTConfig, SamplingConfig, Step, stream
from workbench.app.session import step_data
from workbench.fast import accelerate
from workbench.records import LogitLens
from workbench.tokenizers import CharTokenizer
from workbench.workers import GenerationPool

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"


@pytest.fixture(scope="module")
def pool_and_model():
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    # Accelerated, as load_model gives it to the app: the packed path's numbers do not depend on the thread count
    # (a worker runs on one thread, this process on two); torch's default kernel's do, in the last bits.
    accelerate(model)
    pool = GenerationPool(model, tok, size=1)
    yield pool, model, tok
    pool.close()


def test_worker_steps_equal_in_process_steps(pool_and_model):
    pool, model, tok = pool_and_model
    cfg = SamplingConfig(max_new_tokens=40, temperature=0.9, top_k=10, seed=5)  # slides the 32-token window
    here = list(stream(model, tok, tok.encode("ROMEO:"), cfg))
    there = list(pool.stream(tok.encode("ROMEO:"), cfg))
    assert [s.token_id for s in there] == [s.token_id for s in here]
    assert [s.notes for s in there] == [s.notes for s in here]
    assert there[0].prompt_attention is not None and torch.equal(there[0].prompt_attention, here[0].prompt_attention)
    for a, b in zip(there, here):
        assert torch.equal(a.attention, b.attention)
        # Every other field, the candidates' strings included (the server makes them again from the ids).
        bare = dict(attention=None, prompt_attention=None, seconds=0.0)
        assert dataclasses.replace(a, **bare) == dataclasses.replace(b, **bare)


def assert_same_step(got: Step, expected: Step) -> None:
    for f in dataclasses.fields(Step):
        a, b = getattr(got, f.name), getattr(expected, f.name)
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f.name
        else:
            assert type(a) is type(b) and a == b, f.name
    if expected.lens is not None:  # LogitLens's equality compares tensors by value: check their types too
        assert got.lens.ids.dtype == expected.lens.ids.dtype and got.lens.probs.dtype == expected.lens.probs.dtype


@pytest.mark.parametrize("capture", [True, False])
@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_a_step_round_trips_through_its_wire_form(capture, with_tokenizer):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    tok = tok if with_tokenizer else None
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.8, top_k=8, top_p=0.9, repetition_penalty=1.2, seed=2)
    steps = list(stream(model, tok, [3, 1, 4, 1, 5], cfg, capture=capture))
    assert any(s.notes for s in steps[1:]), "the window should slide, so that a step carries notes"
    if capture:
        assert steps[0].prompt_attention is not None and isinstance(steps[0].lens, LogitLens)
    assert [s.name for s in steps[0].stages] == ["raw", "penalties", "temperature", "top-k", "top-p"]
    for step in steps:
        # Through pickle, as a worker sends it.
        wire = pickle.loads(pickle.dumps(step.to_wire(), protocol=pickle.HIGHEST_PROTOCOL))
        assert_same_step(Step.from_wire(wire, tok), step)


def test_a_view_runs_in_the_worker_and_only_its_result_comes_back(pool_and_model):
    pool, model, tok = pool_and_model
    cfg = SamplingConfig(max_new_tokens=6, seed=3)
    here = [step_data(s) for s in stream(model, tok, tok.encode("ROMEO:"), cfg)]
    there = list(pool.stream(tok.encode("ROMEO:"), cfg, view=step_data))
    assert there == here and "rows" in there[0]


def test_closing_early_stops_the_worker_and_frees_it(pool_and_model):
    pool, model, tok = pool_and_model
    cfg = SamplingConfig(max_new_tokens=200, seed=1)
    steps = pool.stream(tok.encode("ROMEO:"), cfg)
    first = [next(steps).token_id for _ in range(3)]
    steps.close()
    # The pool has one worker: this request gets it only if the closed one gave it back.
    again = [s.token_id for s in pool.stream(tok.encode("ROMEO:"), SamplingConfig(max_new_tokens=3, seed=1))]
    assert again == first


def test_an_error_fails_one_request_and_the_next_succeeds(pool_and_model):
    pool, model, tok = pool_and_model
    cfg = SamplingConfig(max_new_tokens=5, seed=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        list(pool.stream([10_000], cfg))
    assert len(list(pool.stream(tok.encode("R"), cfg))) == 5


def test_a_dead_worker_is_replaced(pool_and_model):
    pool, model, tok = pool_and_model
    pool._workers[0].process.kill()
    pool._workers[0].process.join()
    with pytest.raises(RuntimeError, match="worker stopped unexpectedly"):
        list(pool.stream(tok.encode("R"), SamplingConfig(max_new_tokens=5, seed=0)))
    expected = [s.token_id for s in stream(model, tok, tok.encode("R"), SamplingConfig(max_new_tokens=5, seed=0))]
    assert [s.token_id for s in pool.stream(tok.encode("R"), SamplingConfig(max_new_tokens=5, seed=0))] == expected


def test_gpu_models_are_refused():
    model = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=4)).to("meta")
    with pytest.raises(ValueError, match="CPU models"):
        GenerationPool(model, None, size=1)



def test_a_worker_whose_server_is_gone_exits_quietly(pool_and_model):
    _, model, tok = pool_and_model
    worker = GenerationPool(model, tok, size=1)._workers[0]
    worker.conn.close()  # what the worker sees when the server process ends without saying goodbye
    worker.process.join(timeout=60)
    assert worker.process.exitcode == 0  # no traceback, no error code

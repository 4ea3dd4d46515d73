"""gpt_lab.sft: chat template, label mask, data split, fine-tuning and exact-match evaluation."""
import ast
import inspect

import pytest
import torch
import torch.nn.functional as F

from gpt_lab.data import collate, function_arguments
from gpt_lab.model import GPT, GPTConfig
from gpt_lab.prompting import CODE_ARGUMENTS_FORMAT, few_shot_prompt
from gpt_lab.sft import (SYSTEM_PROMPT, TASKS, AnswerLoss, SFTExample, apply_chat_template,
                         build_sft_example, evaluate_exact_match, few_shot_split, finetune, finetuned, function_tasks,
                         predict, sft_batches)
from gpt_lab.tokenizer import CompactTokenizer, get_tokenizer
from gpt_lab.loss import IGNORE_INDEX, shift_labels
from gpt_lab.train import evaluate


def example(code: str, name: str) -> SFTExample:
    return SFTExample(SYSTEM_PROMPT, f"{TASKS['function-name']}\n\n{code}", name, "function-name", "toy", code)


TOY = [example("def add(a, b):\n    return a + b", "add"),
       example("def neg(x):\n    return -x", "neg"),
       example("def first(xs):\n    return xs[0]", "first"),
       example("def size(self):\n    return len(self.items)", "size")]


@pytest.fixture(scope="module")
def tok():
    """A compact tokenizer over the toy texts (a few hundred ids: tiny models train in seconds)."""
    texts = [apply_chat_template(e.messages()) for e in TOY]
    return CompactTokenizer(get_tokenizer().encode("\n".join(texts), allowed_special="all"))


def tiny_model(tok, seed=0, key_shift=False):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.n_vocab, block_size=64, n_layer=2, n_head=2, n_embd=48, dropout=0.0,
                         key_shift=key_shift))


# ----------------------------------------------------------------------------- template

def test_chat_template_exact_string():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Extract the function name from the code.\n\ndef add(a, b):\n    return a + b"},
                {"role": "assistant", "content": "add"}]
    assert apply_chat_template(messages) == (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n"
        "Extract the function name from the code.\n\ndef add(a, b):\n    return a + b [/INST] add<|endoftext|>")
    # no answer: ends right after [/INST], ready for generation
    assert apply_chat_template(messages[:2]) == (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n"
        "Extract the function name from the code.\n\ndef add(a, b):\n    return a + b [/INST]")
    # default system prompt; an empty one drops the <<SYS>> block
    assert apply_chat_template([{"role": "user", "content": "hi"}]) == \
        f"[INST] <<SYS>>\n{SYSTEM_PROMPT}\n<</SYS>>\n\nhi [/INST]"
    assert apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content": "hi"}]) == "[INST] hi [/INST]"


def test_chat_template_multi_turn_and_errors():
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
             {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
    assert apply_chat_template(turns) == \
        "[INST] <<SYS>>\nS\n<</SYS>>\n\nu1 [/INST] a1<|endoftext|>[INST] u2 [/INST]"
    with pytest.raises(ValueError, match="expected 'user'"):
        apply_chat_template([{"role": "assistant", "content": "a"}])
    with pytest.raises(ValueError, match="expected 'assistant'"):
        apply_chat_template([{"role": "user", "content": "u"}, {"role": "user", "content": "u"}])
    with pytest.raises(ValueError, match="at least one 'user'"):
        apply_chat_template([{"role": "system", "content": "S"}])
    with pytest.raises(ValueError, match="'role' and 'content'"):
        apply_chat_template([{"role": "user", "text": "u"}])


# ----------------------------------------------------------------------------- label mask

@pytest.mark.parametrize("tokenizer", ["gpt2", "compact"])
def test_label_mask_position_by_position(tokenizer, tok):
    enc = get_tokenizer() if tokenizer == "gpt2" else tok
    e = TOY[0]
    ids, labels = build_sft_example(e.system, e.user, e.answer, enc)
    prompt = enc.encode(apply_chat_template(e.messages(with_answer=False)))
    answer = enc.encode(" add") + [enc.eot_token]
    P = len(prompt)
    assert ids == prompt + answer
    # the whole templated text tokenizes to the same ids (training = generation prompt + answer)
    assert ids == enc.encode(apply_chat_template(e.messages()), allowed_special="all")
    assert len(labels) == len(ids)
    for t in range(len(ids)):
        if t < P:
            assert labels[t] == IGNORE_INDEX, f"prompt position {t} must be ignored"
        else:
            assert labels[t] == ids[t], f"answer position {t} must be learned"
    assert labels[-1] == enc.eot_token  # the end token is learned: the model learns to stop
    # after the shift, the last prompt position predicts the first answer token
    targets = shift_labels(torch.tensor([labels]))[0].tolist()
    assert targets[:P - 1] == [IGNORE_INDEX] * (P - 1)
    assert targets[P - 1:-1] == answer and targets[-1] == IGNORE_INDEX

    ids2, labels2 = build_sft_example(e.system, e.user, e.answer, enc, mask_prompt=False)
    assert ids2 == ids and labels2 == ids  # learn every position, prompt included


def test_build_sft_example_rejects_empty_answer(tok):
    with pytest.raises(ValueError, match="answer"):
        build_sft_example(SYSTEM_PROMPT, "u", "  ", tok)


# ----------------------------------------------------------------------------- data

def test_few_shot_split_fits_shots_query_and_answer_in_the_context():
    """K shots, a query and the new tokens always fit; shots from training packages, queries held out."""
    enc = get_tokenizer()
    split = few_shot_split(enc, block_size=256, max_shots=4)
    assert (split.shot_budget, split.query_budget) == (40, 80)  # (256 - 16) // 6, 256 - 16 - 4 * 40
    assert len(split.pool) > 50 and len(split.queries) > 50
    assert {e.task for e in split.pool + split.queries} == {"arguments"}
    top = lambda exs: {e.module.split(".")[0] for e in exs}  # noqa: E731
    assert not top(split.pool) & top(split.queries)
    for query in split.queries[:20]:
        prompt = few_shot_prompt([(e.code, e.answer) for e in split.pool[:4]], query.code, **CODE_ARGUMENTS_FORMAT)
        assert len(enc.encode(prompt)) + 16 <= 256
    n_tokens = lambda e: len(enc.encode(few_shot_prompt([(e.code, e.answer)], "", **CODE_ARGUMENTS_FORMAT)))  # noqa: E731
    assert max(map(n_tokens, split.pool)) <= 40 < max(map(n_tokens, split.queries)) <= 80


def test_arguments_match_inspect_signature():
    def f(a, b=1, /, c=2, *rest, d, e=3, **kw):
        pass

    node = ast.parse(inspect.getsource(f).strip()).body[0]
    expected = ", ".join(str(p).split("=")[0] for p in inspect.signature(f).parameters.values())
    assert function_arguments(node) == expected == "a, b, c, *rest, d, e, **kw"


def test_function_tasks_split_by_module_and_answers():
    splits = function_tasks(max_code_tokens=48)
    assert len(splits.train) > 500 and len(splits.test) > 100
    top = lambda exs: {e.module.split(".")[0] for e in exs}  # noqa: E731
    assert not top(splits.train) & top(splits.test), "a package is in both train and test"
    assert not {e.module for e in splits.train} & {e.module for e in splits.test}
    assert {e.task for e in splits.test} == set(TASKS)
    for e in splits.train[:300] + splits.test[:300]:
        assert e.user == f"{TASKS[e.task]}\n\n{e.code}" and e.system == SYSTEM_PROMPT
        assert len(get_tokenizer().encode(e.code, disallowed_special=())) <= 48
        node = ast.parse(e.code).body[0]  # real, parseable code of one function
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        assert e.answer == (node.name if e.task == "function-name" else function_arguments(node))
    # deterministic, and the seed changes which packages are held out
    again = function_tasks(max_code_tokens=48)
    assert again.test == splits.test and again.train == splits.train
    assert top(function_tasks(max_code_tokens=48, seed=1).test) != top(splits.test)
    with pytest.raises(ValueError, match="unknown task"):
        function_tasks(tasks=("nope",))


# ----------------------------------------------------------------------------- batches and training

def test_sft_batches_pad_shift_and_loss(tok):
    batches = sft_batches({"train": TOY, "val": TOY[:2]}, tok, batch_size=3, block_size=64)
    x, y, mask = batches("train", 0)
    assert x.shape == y.shape == mask.shape and x.shape[0] == 3
    x2, y2, _ = batches("train", 0)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # same batch for the same (split, step)
    vx, _, vm = batches("val", 0)
    val_rows = {tuple(tok.encode(apply_chat_template(e.messages()), allowed_special="all")) for e in TOY[:2]}
    assert {tuple(vx[b, :int(vm[b].sum())].tolist()) for b in range(3)} == val_rows  # val reads its own examples
    rows = {tuple(tok.encode(apply_chat_template(e.messages()), allowed_special="all")): e for e in TOY}
    for b in range(3):
        n = int(mask[b].sum())
        ids = tuple(x[b, :n].tolist())
        assert ids in rows and (mask[b, :n] == 1).all() and (mask[b, n:] == 0).all()
        _, labels = build_sft_example(rows[ids].system, rows[ids].user, rows[ids].answer, tok)
        assert y[b, :n].tolist() == labels[1:] + [IGNORE_INDEX]
        assert (y[b, n:] == IGNORE_INDEX).all()  # padding is never learned
    # the model's loss is the mean cross-entropy over answer tokens only (reference: F.cross_entropy)
    model = tiny_model(tok)
    logits, loss = model(x, attention_mask=mask, targets=y)
    keep = y != IGNORE_INDEX
    assert torch.allclose(loss, F.cross_entropy(logits[keep], y[keep]), atol=1e-6)
    assert int(keep.sum()) == sum(len(tok.encode(" " + rows[tuple(x[b, :int(mask[b].sum())].tolist())].answer)) + 1
                                  for b in range(3))
    with pytest.raises(ValueError, match="block_size"):
        sft_batches(TOY, tok, batch_size=2, block_size=20)
    with pytest.raises(ValueError, match="'val'"):
        sft_batches(TOY, tok, batch_size=2, block_size=64)("val", 0)


def test_answer_loss_matches_the_model_and_drops_only_invisible_padding(tok):
    """AnswerLoss (what finetune trains): the model's loss and gradients with a smaller LM head; right-padded rows
    run without the attention mask, any other padding keeps it (with and without smeared keys)."""
    x, y, mask = sft_batches(TOY, tok, batch_size=3, block_size=64)("train", 0)
    assert (mask == 0).any()  # some rows are padded
    real = [mask[b].bool() for b in range(3)]
    left, left_mask = collate([x[b, real[b]].tolist() for b in range(3)], tok.eot_token, side="left")
    left_y = torch.full_like(left, IGNORE_INDEX)
    for b in range(3):
        left_y[b, left_mask[b].bool()] = y[b, real[b]]
    on_padding = y.clone()
    on_padding[~mask.bool()] = 0  # a target learned on padding: dropping the mask would change it
    for key_shift in (False, True):
        model = tiny_model(tok, key_shift=key_shift)
        seen = []  # the attention mask that reaches the model
        hidden_states = model.hidden_states
        model.hidden_states = lambda idx, attention_mask=None, *rest: (seen.append(attention_mask),
                                                                       hidden_states(idx, attention_mask, *rest))[1]
        for ids, m, targets, dropped in ((x, mask, y, True), (left, left_mask, left_y, False),
                                         (x, mask, on_padding, False)):
            _, loss = model(ids, attention_mask=m, targets=targets)
            logits, wrapped = AnswerLoss(model)(ids, attention_mask=m, targets=targets)
            assert logits is None  # the logits are never formed whole (gpt_lab.loss.chunked_lm_loss)
            assert (seen[-1] is None) == dropped
            assert torch.allclose(wrapped, loss, atol=1e-6)
            for weight in (model.transformer.wte.weight, model.transformer.h[0].attn.c_attn.weight):
                grad_full = torch.autograd.grad(loss, weight, retain_graph=True)[0]
                grad_wrapped = torch.autograd.grad(wrapped, weight, retain_graph=True)[0]
                assert torch.allclose(grad_full, grad_wrapped, atol=1e-6)
        # and the left-padded loss is the unpadded rows' loss (the mask does its work)
        _, padded = AnswerLoss(model)(left, attention_mask=left_mask, targets=left_y)
        alone = [AnswerLoss(model)(x[b, real[b]][None], targets=y[b, real[b]][None])[1] for b in range(3)]
        counts = [int((y[b] != IGNORE_INDEX).sum()) for b in range(3)]
        assert torch.allclose(padded, sum(a * c for a, c in zip(alone, counts)) / sum(counts), atol=1e-5)


def test_every_example_is_seen_once_per_epoch(tok):
    batches = sft_batches(TOY, tok, batch_size=2, block_size=64, seed=3)
    seen = [tuple(x[m.bool()].tolist()) for s in range(2) for x, m in zip(batches("train", s)[0], batches("train", s)[2])]
    assert len(set(seen)) == len(TOY)


def test_by_length_is_a_permutation_with_less_padding():
    """Each epoch still shows every row once, and batches group rows of similar length."""
    from gpt_lab.sft import _by_length
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (1000,), generator=g).tolist()
    order = torch.randperm(1000, generator=g).tolist()
    grouped = _by_length(order, lengths, 8, torch.Generator().manual_seed(1), pool_batches=16)
    assert sorted(grouped) == list(range(1000))

    def padding(o):  # padded positions when each batch pads to its longest row
        return sum(8 * max(lengths[i] for i in o[j:j + 8]) - sum(lengths[i] for i in o[j:j + 8])
                   for j in range(0, len(o), 8))
    assert padding(grouped) < 0.25 * padding(order)
    # the batches are cut from length-sorted pools: inside a batch the rows are sorted by length
    batches = [grouped[j:j + 8] for j in range(0, 1000, 8)]
    assert all([lengths[i] for i in b] == sorted(lengths[i] for i in b) for b in batches)
    # and shuffled: the batch order is not sorted by length
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts)


def test_finetune_lowers_the_answer_loss(tok):
    model = tiny_model(tok)
    masked = sft_batches(TOY, tok, batch_size=4, block_size=64)
    before = evaluate(model, lambda split, step: masked("train", step), steps=1)["loss"]
    history = finetune(model, tok, TOY, val_examples=TOY, steps=40, lr=3e-3, batch_size=4, warmup_steps=2,
                       train_embeddings=True)  # a random model: nothing in its embedding is worth keeping
    after = evaluate(model, lambda split, step: masked("train", step), steps=1)["loss"]
    assert len(history.train_loss) == 40 and history.val_loss
    assert after < 0.2 * before, (before, after)
    assert not model.training


def test_finetune_trains_with_the_written_out_attention_on_cpu(tok, monkeypatch):
    """On CPU the loop runs the written-out attention (faster there) and gives the model back as it was:
    with its own fused attention, or with the attention function a student set."""
    import gpt_lab.sft as sft
    from gpt_lab.attention import scaled_dot_product_attention

    calls = {"written out": 0, "student": 0}

    def counting(name):
        def attend(q, k, v, mask=None):
            calls[name] += 1
            return scaled_dot_product_attention(q, k, v, mask)
        return attend

    monkeypatch.setattr(sft, "scaled_dot_product_attention", counting("written out"))
    model = tiny_model(tok)
    finetune(model, tok, TOY, steps=2, lr=3e-3, batch_size=4, warmup_steps=1)
    assert calls["written out"] == 2 * 2  # 2 steps x 2 layers
    assert all(block.attn.attention_fn is None for block in model.transformer.h)

    student = counting("student")
    model.set_attention(student)
    finetune(model, tok, TOY, steps=2, lr=3e-3, batch_size=4, warmup_steps=1)
    assert calls == {"written out": 4, "student": 4}
    assert all(block.attn.attention_fn is student for block in model.transformer.h)


def test_finetune_freezes_the_token_embeddings_unless_asked(tok):
    """The token embedding (also the LM head) is left exactly as it was, not even weight decay touches
    it, and is given back trainable; everything else trains. `train_embeddings=True` trains it too."""
    model = tiny_model(tok)
    embeddings, positions = (model.transformer.wte.weight.detach().clone(),
                             model.transformer.wpe.weight.detach().clone())
    masked = sft_batches(TOY, tok, batch_size=4, block_size=64)
    before = evaluate(model, lambda split, step: masked("train", step), steps=1)["loss"]
    finetune(model, tok, TOY, steps=20, lr=3e-3, batch_size=4, warmup_steps=1)
    assert evaluate(model, lambda split, step: masked("train", step), steps=1)["loss"] < 0.95 * before
    assert torch.equal(model.transformer.wte.weight, embeddings)
    assert not torch.equal(model.transformer.wpe.weight, positions)
    assert model.transformer.wte.weight.requires_grad and model.lm_head.weight is model.transformer.wte.weight
    finetune(model, tok, TOY, steps=3, lr=3e-3, batch_size=4, warmup_steps=1, train_embeddings=True)
    assert not torch.equal(model.transformer.wte.weight, embeddings)


def test_masking_decides_what_is_learned(tok):
    """Without the mask the prompt is learned too; with it, only the answer."""
    prompt_loss = {}
    for mask_prompt in (True, False):
        model = tiny_model(tok)
        finetune(model, tok, TOY, steps=30, lr=3e-3, batch_size=4, mask_prompt=mask_prompt, warmup_steps=2,
                 train_embeddings=True)
        full = sft_batches(TOY, tok, batch_size=4, block_size=64, mask_prompt=False)
        answer_only = sft_batches(TOY, tok, batch_size=4, block_size=64, mask_prompt=True)
        x, y_all, m = full("train", 0)
        _, y_ans, _ = answer_only("train", 0)
        y_prompt = y_all.masked_fill(y_ans != IGNORE_INDEX, IGNORE_INDEX)  # prompt targets only
        with torch.no_grad():
            prompt_loss[mask_prompt] = model(x, attention_mask=m, targets=y_prompt)[1].item()
    assert prompt_loss[False] < 0.5 * prompt_loss[True], prompt_loss


# ----------------------------------------------------------------------------- evaluation

def test_evaluate_exact_match_on_a_memorized_model(tok):
    model = tiny_model(tok)
    finetune(model, tok, TOY, steps=80, lr=3e-3, batch_size=4, warmup_steps=2, train_embeddings=True)
    assert predict(model, tok, TOY) == [e.answer for e in TOY]
    assert evaluate_exact_match(model, tok, TOY) == 1.0
    wrong = [SFTExample(e.system, e.user, "other", e.task, e.module, e.code) for e in TOY[:2]]
    assert evaluate_exact_match(model, tok, TOY + wrong) == pytest.approx(4 / 6)
    padded = [SFTExample(e.system, e.user, f"  {e.answer} ", e.task, e.module, e.code) for e in TOY]
    assert evaluate_exact_match(model, tok, padded, batch_size=3) == 1.0  # references are stripped too
    with pytest.raises(ValueError, match="no examples"):
        evaluate_exact_match(model, tok, [])


def test_finetuned_is_cached_and_scored():
    first = finetuned("function-name")
    assert first.path.exists() and first.info["tasks"] == ["function-name"]
    assert 0.0 <= first.info["accuracy"]["function-name"] <= 1.0 and first.info["n_train"] > 0
    again = finetuned("function-name")
    assert again.path == first.path
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    assert finetuned("function-name", mask_prompt=False).path != first.path
    with pytest.raises(ValueError, match="unknown task"):
        finetuned("nope")


def test_cli_finetune(capsys):
    from gpt_lab.cli import main

    assert main(["finetune", "--task", "function-name"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint:" in out and "sft-function-name" in out and "function-name accuracy" in out

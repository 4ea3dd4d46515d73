"""Decoding: turn next-token logits into text, one token at a time.

Each rule is a small function on logits (..., V), batched over the leading dims, so they compose:

    logits -> apply_penalties (frequency/presence, and temperature: z / (T k))
           -> top_k_filter -> top_p_filter -> greedy | sample

`process_logits` chains them in that order (the lecture's recipe). `generate` is the one front door
(greedy, sampling or beam search, a batch of prompts of different lengths, stop at EOS, with or
without the KV cache); `stream_generate` yields the tokens of one prompt as they come, and
`beam_search` keeps the `beam_width` most probable continuations. All three get the next token's
logits from one function, `next_token_logits`, which runs the whole sequence, or, with a KV cache,
only the positions not cached yet.

Context limit: the model has `block_size` position embeddings. A prompt of n tokens followed by m
new tokens runs n + m - 1 positions (the last new token is never fed back), so generation raises a
ValueError up front when n + m - 1 > block_size, saying how many new tokens fit. No sliding window.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpt_lab.data import pad_sequences
from gpt_lab.kv_cache import KVCache

STRATEGIES = ("greedy", "sample", "beam")


# ----------------------------------------------------------------------------- choosing a token

def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The most probable token: (..., V) logits -> (...) ids. Ties go to the lowest id."""
    return logits.argmax(dim=-1)


def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral sampling: draw one token from softmax(logits). (..., V) -> (...) ids.

    -inf logits (filtered tokens) have probability 0 and are never drawn. `generator` (seeded)
    makes the draw reproducible; a CPU generator works for logits on any device.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    if generator is not None and generator.device != flat.device:
        flat = flat.to(generator.device)
    ids = torch.multinomial(flat, 1, generator=generator)
    return ids.view(probs.shape[:-1]).to(logits.device)


# ----------------------------------------------------------------------------- reshaping the distribution

def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (for the most probable token use greedy)")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / T): T > 1 flattens the distribution, T < 1 sharpens it (T -> 0 is greedy)."""
    _check_temperature(temperature)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf. (..., V) -> (..., V).

    Tokens tied with the k-th largest logit are all kept (so more than k may survive): the
    result never depends on an arbitrary tie-break. k >= V keeps everything.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, int(k), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens, in descending probability, whose total
    probability reaches p; set the others to -inf. (..., V) -> (..., V).

    The most probable token is always kept. Tokens tied in probability with the last kept one
    are kept too (as in `top_k_filter`). p = 1 keeps everything.
    """
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1:
        return logits
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs = probs.sort(dim=-1, descending=True).values
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs       # probability of the tokens ranked higher
    n_keep = (mass_before < p).sum(dim=-1, keepdim=True)            # >= 1: mass_before of the top token is 0
    threshold = sorted_probs.gather(-1, n_keep - 1)                 # probability of the last kept token
    return logits.masked_fill(probs < threshold, float("-inf"))


def _is_sequence(x) -> bool:
    """A list/tuple or an array with at least one dimension (not a single id)."""
    return isinstance(x, (list, tuple)) or getattr(x, "ndim", 0) > 0


def token_counts(history, vocab_size: int) -> torch.Tensor:
    """How often each token occurs in `history`: (..., L) ids -> (..., vocab_size) float counts.

    `history` is a tensor (..., L), a list of ids, or a list of lists of different lengths.
    Negative ids (padding) are not counted.
    """
    if isinstance(history, torch.Tensor):
        hist = history.long()
    elif len(history) > 0 and _is_sequence(history[0]):
        hist = pad_sequences([list(map(int, h)) for h in history], pad_value=-1)
    else:
        hist = torch.tensor(list(map(int, history)), dtype=torch.long)
    if hist.numel() and int(hist.max()) >= vocab_size:
        raise ValueError(f"history holds token id {int(hist.max())}, outside the vocabulary of {vocab_size}")
    dump = torch.where(hist < 0, vocab_size, hist)  # padding goes to an extra column, dropped below
    counts = torch.zeros(*hist.shape[:-1], vocab_size + 1, device=hist.device)
    counts.scatter_add_(-1, dump, torch.ones_like(dump, dtype=counts.dtype))
    return counts[..., :vocab_size]


def _counts_for(logits: torch.Tensor, history) -> torch.Tensor:
    counts = token_counts(history, logits.shape[-1]).to(logits.device)
    try:
        torch.broadcast_shapes(counts.shape, logits.shape)
    except RuntimeError:
        raise ValueError(f"history of shape {tuple(counts.shape[:-1])} + (L,) does not match logits of shape "
                         f"{tuple(logits.shape)}: give one history per row of logits") from None
    return counts


def apply_penalties(logits: torch.Tensor, history, frequency_penalty: float, presence_penalty: float,
                    temperature: float = 1.0) -> torch.Tensor:
    """The lecture's multiplicative repetition penalties: z_i / (T k_i), with

        k_i = 1 + (frequency_penalty - 1) * count_i + (presence_penalty - 1) * [count_i > 0]

    where count_i is how often token i occurs in `history` (the text so far: (..., L) ids, a list,
    or a list of lists; negative ids are padding). Penalties are >= 1; 1 means none.

    Dividing moves a logit towards 0, which lowers it only if it is positive: so when any logit of
    a row is negative, the row is first shifted to be non-negative by subtracting its minimum (the
    lecture's note). That shift has a cost: softmax ignores adding a constant to every logit, the
    penalised distribution does not. z and z + c give the same probabilities without penalties
    but different ones with them, and the rule changes regime at min(z) = 0 (a kink, not a
    jump): while some logit is negative, every offset gives the same result (the shift undoes
    it); once all are positive, the larger the offset, the stronger the penalty. The token with
    the lowest logit (0 after a shift) is never penalised. `apply_additive_penalties` (OpenAI's
    form) subtracts instead, and has none of this.

    Example (the lecture's): logits [0.8, 0.9, 0.1, 0.4], history a,b,a,c,a,a, frequency 1.1,
    presence 1.2 -> k = [1.6, 1.3, 1.3, 1.0], probabilities [0.2651, 0.3213, 0.1737, 0.2399].
    """
    for name, value in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
        if not value >= 1:
            raise ValueError(f"{name} must be >= 1 in the multiplicative form (1 = no penalty), got {value}")
    _check_temperature(temperature)
    counts = _counts_for(logits, history)
    k = 1 + (frequency_penalty - 1) * counts + (presence_penalty - 1) * (counts > 0)
    finite_min = logits.masked_fill(~torch.isfinite(logits), float("inf")).amin(dim=-1, keepdim=True)
    shifted = logits - finite_min.clamp(max=0)  # only rows with a negative logit move
    return shifted / (temperature * k)


def apply_additive_penalties(logits: torch.Tensor, history, frequency_penalty: float = 0.0,
                             presence_penalty: float = 0.0) -> torch.Tensor:
    """OpenAI-style penalties: z_i - frequency_penalty * count_i - presence_penalty * [count_i > 0].

    Here 0 means no penalty (OpenAI allows -2..2; negative values encourage repetition). A
    subtraction lowers a logit whatever its sign, so no shift is needed and the result is
    unchanged by adding a constant to all logits, unlike `apply_penalties`.
    """
    counts = _counts_for(logits, history)
    return logits - frequency_penalty * counts - presence_penalty * (counts > 0)


def _check_sampling_args(temperature: float, top_k: int | None, top_p: float | None,
                         frequency_penalty: float, presence_penalty: float) -> None:
    """Raise the same errors as the functions above, before any model work."""
    apply_penalties(torch.zeros(1), [], frequency_penalty, presence_penalty, temperature)
    if top_k is not None:
        top_k_filter(torch.zeros(1), top_k)
    if top_p is not None:
        top_p_filter(torch.zeros(1), top_p)


def process_logits(logits: torch.Tensor, history=None, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, frequency_penalty: float = 1.0,
                   presence_penalty: float = 1.0) -> torch.Tensor:
    """The lecture's sampling recipe on next-token logits (..., V): penalties with temperature
    (z / (T k)), then top-k, then top-p. The result goes to `sample` (or `greedy`)."""
    if frequency_penalty != 1 or presence_penalty != 1:
        logits = apply_penalties(logits, [] if history is None else history, frequency_penalty,
                                 presence_penalty, temperature)
    elif temperature != 1:
        logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


# ----------------------------------------------------------------------------- running the model

def next_token_logits(model: torch.nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      kv_cache: KVCache | None = None) -> torch.Tensor:
    """Logits (B, V), float32, of the token that follows each row of `ids` (B, T).

    The one step every decoder here uses. Without a cache the whole sequence runs through the
    model (cost grows with T). With a cache only the positions not cached yet run: the whole
    prompt on the first call (prefill), then the one token appended since the last call.
    `attention_mask` (B, T): 1 = token, 0 = left padding; None when nothing is padded.
    Only the last position goes through the LM head (the V-wide projection is the costly part).
    """
    new = ids if kv_cache is None else ids[:, kv_cache.length:]
    if new.shape[1] == 0:
        raise ValueError(f"all {ids.shape[1]} positions are cached already: append a token before the next step")
    hidden, _ = model.hidden_states(new, attention_mask, kv_cache)
    return model.lm_head(hidden[:, -1]).float()


def _as_prompts(prompt_ids) -> list[list[int]]:
    """list[int] | list[list[int]] | (T,) or (B, T) tensor -> a list of prompts."""
    if isinstance(prompt_ids, torch.Tensor):
        prompt_ids = prompt_ids.tolist()
    prompt_ids = list(prompt_ids)
    if len(prompt_ids) == 0:
        raise ValueError("empty prompt: give at least one token id (for example the end-of-text token)")
    if _is_sequence(prompt_ids[0]):
        return [[int(t) for t in p] for p in prompt_ids]
    return [[int(t) for t in prompt_ids]]


def _check_prompts(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int) -> None:
    """Clear errors for an empty prompt, ids outside the vocabulary, and a context too short."""
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens}")
    vocab, block = model.config.vocab_size, model.config.block_size
    for i, p in enumerate(prompts):
        name = "prompt" if len(prompts) == 1 else f"prompt {i}"
        if not p:
            raise ValueError(f"{name} is empty: give at least one token id (for example the end-of-text token)")
        if min(p) < 0 or max(p) >= vocab:
            bad = min(p) if min(p) < 0 else max(p)
            raise ValueError(f"{name} holds token id {bad}, outside the model's vocabulary 0..{vocab - 1}")
        if len(p) > block:
            raise ValueError(f"{name} has {len(p)} tokens, longer than the model's context (block_size {block})")
        if len(p) + max_new_tokens - 1 > block:
            raise ValueError(
                f"{name} of {len(p)} tokens + {max_new_tokens} new tokens needs {len(p) + max_new_tokens - 1} "
                f"positions, more than the model's context (block_size {block}): ask for at most "
                f"{block - len(p) + 1} new tokens, or shorten the prompt"
            )


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) within; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _decode_steps(model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, strategy: str,
                  temperature: float, top_k: int | None, top_p: float | None, frequency_penalty: float,
                  presence_penalty: float, eos_id: int | None, seed: int | None, use_cache: bool,
                  pad_id: int | None) -> Iterator[torch.Tensor]:
    """Yield the next token of every prompt, (B,), step after step (greedy or sampling).

    Prompts are left-padded so they all end at the last column; the attention mask hides the
    padding and the model counts positions over real tokens, so each row continues as if alone.
    Stops after `max_new_tokens` steps, or once every row has produced `eos_id`.
    """
    device = next(model.parameters()).device
    ids = pad_sequences(prompts, 0 if pad_id is None else pad_id, side="left").to(device)  # masked: any id
    mask = pad_sequences([[1] * len(p) for p in prompts], 0, side="left").to(device)
    mask = None if bool(mask.all()) else mask  # no padding: the faster plain causal path
    history = None if mask is None else ids.masked_fill(mask == 0, -1)  # padding does not count
    cache = KVCache.for_model(model, len(prompts), ids.shape[1] + max_new_tokens - 1) \
        if use_cache and max_new_tokens else None
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        if step > 0:
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            history = None if history is None else torch.cat([history, next_ids[:, None]], dim=1)
            mask = None if mask is None else F.pad(mask, (0, 1), value=1)
        logits = next_token_logits(model, ids, mask, cache)
        seen = ids if history is None else history
        if strategy == "greedy":  # temperature, top-k and top-p never move the argmax; penalties do
            next_ids = greedy(process_logits(logits, seen, 1.0, None, None, frequency_penalty, presence_penalty))
        else:
            next_ids = sample(process_logits(logits, seen, temperature, top_k, top_p, frequency_penalty,
                                             presence_penalty), generator)
        yield next_ids
        if eos_id is not None:
            finished |= next_ids == eos_id
            if bool(finished.all()):
                return


def _check_strategy(strategy: str, beam_width: int, top_k, top_p, frequency_penalty, presence_penalty) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if int(beam_width) != beam_width or beam_width < 1:
        raise ValueError(f"beam_width must be an integer >= 1, got {beam_width}")
    if strategy != "beam" and beam_width != 1:
        raise ValueError(f"beam_width={beam_width} needs strategy='beam' (got strategy={strategy!r})")
    if strategy == "beam" and (top_k is not None or top_p is not None
                               or frequency_penalty != 1 or presence_penalty != 1):
        raise ValueError("beam search ranks continuations by the model's log-probabilities: "
                         "top_k, top_p and penalties apply to greedy/sampling only")


def generate(model: torch.nn.Module, prompt_ids, max_new_tokens: int, strategy: str = "greedy",
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             frequency_penalty: float = 1.0, presence_penalty: float = 1.0, beam_width: int = 1,
             eos_id: int | None = None, seed: int | None = None, use_cache: bool = True,
             pad_id: int | None = None) -> list[list[int]]:
    """Continue one prompt (list of ids) or a batch (list of lists, any lengths).

    strategy: "greedy" (argmax, after penalties), "sample" (temperature, top-k, top-p, penalties,
    seeded by `seed`) or "beam" (`beam_search` with `beam_width`, best hypothesis; no penalties).
    Returns, for every prompt, only the new tokens, stopping before `eos_id` (which is not
    included). The model runs in eval mode without gradients, on its own device. A batch
    gives each prompt the tokens it would get alone (greedy; up to float rounding). `pad_id`
    fills the left padding (masked out, so any id of the vocabulary; default 0).
    """
    prompts = _as_prompts(prompt_ids)
    _check_prompts(model, prompts, max_new_tokens)
    _check_strategy(strategy, beam_width, top_k, top_p, frequency_penalty, presence_penalty)
    if pad_id is not None and not 0 <= pad_id < model.config.vocab_size:
        raise ValueError(f"pad_id {pad_id} is outside the model's vocabulary 0..{model.config.vocab_size - 1}")
    _check_sampling_args(temperature if strategy == "sample" else 1.0, top_k, top_p, frequency_penalty,
                         presence_penalty)
    if strategy == "beam":
        return [beam_search(model, p, beam_width, max_new_tokens, eos_id=eos_id, use_cache=use_cache)[0].tokens
                for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    with _eval_mode(model), torch.no_grad():
        for next_ids in _decode_steps(model, prompts, max_new_tokens, strategy, temperature, top_k, top_p,
                                      frequency_penalty, presence_penalty, eos_id, seed, use_cache, pad_id):
            for row, token in enumerate(next_ids.tolist()):
                done[row] = done[row] or token == eos_id
                if not done[row]:
                    out[row].append(token)
    return out


def stream_generate(model: torch.nn.Module, prompt_ids: Sequence[int], max_new_tokens: int,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    frequency_penalty: float = 1.0, presence_penalty: float = 1.0, eos_id: int | None = None,
                    seed: int | None = None, use_cache: bool = True, strategy: str | None = None) -> Iterator[int]:
    """Yield the new tokens of one prompt as they are generated (the same tokens as `generate`).

    strategy: "sample" (default) or "greedy"; temperature=0 means greedy. Stops before `eos_id`.
    """
    prompts = _as_prompts(prompt_ids)
    if len(prompts) != 1:
        raise ValueError(f"stream_generate takes one prompt (a list of ids), got a batch of {len(prompts)}")
    strategy = strategy or ("greedy" if temperature == 0 else "sample")
    if strategy not in ("greedy", "sample"):
        raise ValueError(f"stream_generate's strategy must be 'greedy' or 'sample', got {strategy!r}")
    _check_prompts(model, prompts, max_new_tokens)
    _check_sampling_args(temperature if strategy == "sample" else 1.0, top_k, top_p, frequency_penalty,
                         presence_penalty)
    return _stream(model, prompts, max_new_tokens, strategy, temperature, top_k, top_p, frequency_penalty,
                   presence_penalty, eos_id, seed, use_cache)


@torch.no_grad()  # on a generator: no autograd while it runs, autograd untouched between tokens
def _stream(model, prompts, max_new_tokens, strategy, temperature, top_k, top_p, frequency_penalty,
            presence_penalty, eos_id, seed, use_cache) -> Iterator[int]:
    # a separate generator function, so that stream_generate's errors are raised at the call
    with _eval_mode(model):
        for next_ids in _decode_steps(model, prompts, max_new_tokens, strategy, temperature, top_k, top_p,
                                      frequency_penalty, presence_penalty, eos_id, seed, use_cache, None):
            token = int(next_ids[0])
            if token == eos_id:
                return
            yield token


# ----------------------------------------------------------------------------- beam search

@dataclass
class Hypothesis:
    """A continuation found by beam search.

    tokens: the new tokens (without the EOS); logprob: total log-probability of the new tokens,
    including the EOS when `finished`; score: logprob / n ** length_penalty, n = new tokens
    counting the EOS (what beams are ranked by); finished: it ended with EOS.
    """

    tokens: list[int]
    logprob: float
    score: float
    finished: bool


def _hypothesis(tokens: list[int], logprob: float, finished: bool, length_penalty: float) -> Hypothesis:
    n = len(tokens) + finished
    return Hypothesis(list(tokens), logprob, logprob / n ** length_penalty if n else logprob, finished)


def beam_search(model: torch.nn.Module, prompt_ids: Sequence[int], beam_width: int, max_new_tokens: int,
                eos_id: int | None = None, length_penalty: float = 1.0, use_cache: bool = True) -> list[Hypothesis]:
    """The `beam_width` best continuations of one prompt, best first.

    At every step each alive beam is extended by every token; the `beam_width` most probable
    extensions (total log-probability) stay alive. An extension ending in `eos_id` becomes a
    finished hypothesis and is kept aside. Search stops after `max_new_tokens`, or once
    `beam_width` hypotheses have finished and no alive beam scores better than the worst of them
    (exact for length_penalty=0, where extending only lowers a score; a heuristic otherwise, as in
    HuggingFace). Finished and still-alive hypotheses are then ranked together by score.
    With beam_width >= V ** (L - 1) this is an exhaustive search over L new tokens.
    """
    prompts = _as_prompts(prompt_ids)
    if len(prompts) != 1:
        raise ValueError(f"beam_search takes one prompt (a list of ids), got a batch of {len(prompts)}")
    _check_prompts(model, prompts, max_new_tokens)
    _check_strategy("beam", beam_width, None, None, 1.0, 1.0)
    device = next(model.parameters()).device
    ids = torch.tensor(prompts, device=device)  # (n_alive, T): one row per alive beam
    cache = KVCache.for_model(model, 1, ids.shape[1] + max_new_tokens - 1) if use_cache and max_new_tokens else None
    beams: list[list[int]] = [[]]
    beam_logprob = torch.zeros(1, device=device)
    finished: list[Hypothesis] = []
    with _eval_mode(model), torch.no_grad():
        for _ in range(max_new_tokens):
            logprobs = torch.log_softmax(next_token_logits(model, ids, None, cache), dim=-1)
            total = (beam_logprob[:, None] + logprobs).flatten()  # (n_alive * V,)
            top_logprob, top_index = total.topk(min(2 * beam_width, total.numel()))  # >= beam_width non-EOS
            V = logprobs.shape[-1]
            keep: list[tuple[int, int, float]] = []  # (source beam, token, total log-prob)
            for lp, index in zip(top_logprob.tolist(), top_index.tolist()):
                source, token = divmod(index, V)
                if token == eos_id:
                    finished.append(_hypothesis(beams[source], lp, True, length_penalty))
                else:
                    keep.append((source, token, lp))
                    if len(keep) == beam_width:
                        break
            if not keep:  # every extension ended (only possible when V is tiny)
                beams = []
                break
            sources = torch.tensor([s for s, _, _ in keep], device=device)
            beams = [beams[s] + [t] for s, t, _ in keep]
            beam_logprob = torch.tensor([lp for _, _, lp in keep], device=device)
            ids = torch.cat([ids[sources], torch.tensor([[t] for _, t, _ in keep], device=device)], dim=1)
            if cache is not None:
                cache.reorder(sources)
            if len(finished) >= beam_width:
                worst = sorted(h.score for h in finished)[-beam_width]
                if worst >= max(_hypothesis(b, lp, False, length_penalty).score
                                for b, lp in zip(beams, beam_logprob.tolist())):
                    break
    alive = [_hypothesis(b, lp, False, length_penalty) for b, lp in zip(beams, beam_logprob.tolist())]
    return sorted(finished + alive, key=lambda h: h.score, reverse=True)[:beam_width]


# ----------------------------------------------------------------------------- speed

def time_per_token(model: torch.nn.Module, n_tokens: int, use_cache: bool = True, prompt_len: int = 1,
                   seed: int = 0, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds spent on each of `n_tokens` greedy tokens after a random prompt of `prompt_len` ids
    (batch 1): entry t is the token at position prompt_len + t (the first includes the prefill).

    `clock`: wall time by default; `time.process_time` counts only this process's CPU time, which
    on a busy shared machine with one torch thread is closer to the wall time of an idle one.
    """
    prompt = torch.randint(model.config.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(seed))
    prompts = [prompt.tolist()]
    _check_prompts(model, prompts, n_tokens)
    times = []
    with _eval_mode(model), torch.no_grad():
        start = clock()
        for next_ids in _decode_steps(model, prompts, n_tokens, "greedy", 1.0, None, None, 1.0, 1.0,
                                      None, None, use_cache, None):
            next_ids.tolist()  # wait for the device
            now = clock()
            times.append(now - start)
            start = now
    return times


def measure_generation(model: torch.nn.Module, lengths: Sequence[int], repeats: int = 3,
                       prompt_len: int = 1, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Generation speed with and without the KV cache (greedy, batch 1).

    For each mode, `time_per_token` runs `repeats` times up to max(lengths) tokens (after a short
    warm-up); the fastest time of each position is kept (interference from other work only ever
    adds time, so the minimum estimates the machine's own speed, as in timeit). Generating n tokens
    is the first n steps of that run, so tokens/s at length n = n / (sum of the first n times).
    Returns {"lengths", "positions", "seconds_per_token": {"cache", "no_cache"} (per position),
    "tokens_per_s": {"cache", "no_cache"} (per length), "speedup" (per length), "device", "params",
    "clock"}. `clock` as in `time_per_token`.
    """
    n_max = max(lengths)
    result = {"lengths": list(lengths), "positions": list(range(prompt_len, prompt_len + n_max)),
              "seconds_per_token": {}, "tokens_per_s": {}, "device": str(next(model.parameters()).device),
              "params": model.num_params(), "repeats": repeats, "clock": getattr(clock, "__name__", str(clock))}
    for name, use_cache in (("no_cache", False), ("cache", True)):
        time_per_token(model, min(n_max, 8), use_cache, prompt_len)  # warm-up
        runs = [time_per_token(model, n_max, use_cache, prompt_len, r, clock) for r in range(repeats)]
        per_position = [min(step) for step in zip(*runs)]
        result["seconds_per_token"][name] = per_position
        result["tokens_per_s"][name] = [n / sum(per_position[:n]) for n in lengths]
    result["speedup"] = [c / n for c, n in zip(result["tokens_per_s"]["cache"], result["tokens_per_s"]["no_cache"])]
    return result


def function_body(signature: str, continuation: str, complete: bool) -> str:
    """`signature` + the generated lines that belong to its body.

    The body ends at the first non-empty line that starts at column 0 (the function is over).
    When generation stopped at its token budget first (`complete` False) the last line may be cut
    in the middle, so it is dropped.
    """
    lines = continuation.split("\n")
    body = []
    for i, line in enumerate(lines):
        if i > 0 and line.strip() and not line[0].isspace():
            break
        body.append(line)
    else:
        if not complete:
            body = body[:-1]
    return signature + "\n".join(body)


def parse_rate(model: torch.nn.Module, tokenizer, signatures: Sequence[str], max_new_tokens: int = 96,
               top_p: float | None = 0.9, temperature: float = 1.0, seed: int = 0, batch_size: int = 50) -> float:
    """Share of sampled function bodies that are valid Python.

    Each signature (a `def ...:` line) is continued from a newline by nucleus sampling (top-p,
    seeded); the body is cut where the function ends (`function_body`) and must parse with `ast`
    and hold at least one statement under the `def`.
    """
    import ast

    prompts = [s.rstrip() + "\n" for s in signatures]
    ok = 0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        ids = [tokenizer.encode(p) for p in chunk]
        room = model.config.block_size - max(len(i) for i in ids) + 1
        new = generate(model, ids, min(max_new_tokens, room), strategy="sample", temperature=temperature,
                       top_p=top_p, eos_id=tokenizer.eot_token, seed=seed + start)
        for prompt, tokens in zip(chunk, new):
            code = function_body(prompt, tokenizer.decode(tokens), len(tokens) < min(max_new_tokens, room))
            try:
                tree = ast.parse(code)
            except SyntaxError:
                continue
            ok += bool(tree.body) and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
    return ok / len(prompts)

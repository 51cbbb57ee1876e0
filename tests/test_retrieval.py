"""Retrieval: a real LanceDB table on disk from labels.csv, real all-MiniLM-L6-v2 embeddings, queried by
text and by an image the tiny model describes first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from llava.model.clip_model import ClipModel
from llava.model.text_embedder import load_text_embedder
from llava.serve.search import describe
from llava.tasks.retrieval import Index, build
from llava.tasks.retrieval import main as retrieval

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = """image,description,category,flagged,model_category,similarity
shoe1.jpg,A pair of white running sneakers on a wooden floor.,shoes,,shoes,1.0
shoe2.jpg,Brown leather boots with laces.,shoes,,shoes,1.0
sock1.jpg,A pack of striped cotton socks.,socks,,socks,1.0
car1.jpg,A red sports car parked on a street.,cars,,cars,1.0
car2.jpg,A blue family car in a driveway.,cars,,cars,1.0
lace.jpg,Spare shoelaces in black and white.,accessories,,accessories,1.0
"""


@pytest.fixture(scope="module")
def embedder():
    return load_text_embedder()


@pytest.fixture(scope="module")
def db(tmp_path_factory, embedder):
    d = tmp_path_factory.mktemp("retrieval")
    (d / "labels.csv").write_text(CATALOGUE)
    assert build(d / "labels.csv", d / "catalogue.lancedb", embedder, image_root=str(d)) == 6
    return d / "catalogue.lancedb"


def test_similar_items_by_meaning(db, embedder):
    result = Index(db, embedder).search("black sneakers for jogging", k=3)
    hits = result["results"]
    assert result["query_category"] == "shoes" and hits[0]["image"] == "shoe1.jpg"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(-1 <= h["score"] <= 1 for h in hits) and Path(hits[0]["image_path"]).name == "shoe1.jpg"
    assert Index(db, embedder).search("a car for the family", k=1)["results"][0]["image"] == "car2.jpg"


def test_complementary_items_are_other_categories(db, embedder):
    result = Index(db, embedder).search("black sneakers for jogging", k=3, mode="complementary")
    assert [h["category"] for h in result["results"]][0] == "accessories"
    assert "shoes" not in {h["category"] for h in result["results"]} and len(result["results"]) == 3


def test_a_table_built_with_another_embedder_is_refused(db, embedder, tmp_path):
    other = tmp_path / "other.lancedb"
    shutil.copytree(db, other)
    meta = json.loads((other / "llava_retrieval.json").read_text())
    (other / "llava_retrieval.json").write_text(json.dumps({**meta, "embedder": "e5-large", "dim": 1024}))
    with pytest.raises(SystemExit, match="built with e5-large \\(1024-d\\).*all-MiniLM-L6-v2 \\(384-d\\)"):
        Index(other, embedder)
    with pytest.raises(SystemExit, match="not a table built by"):
        Index(tmp_path, embedder)


def test_labels_without_the_columns_are_refused(tmp_path, embedder):
    (tmp_path / "l.csv").write_text("image,caption\na.jpg,x\n")
    with pytest.raises(SystemExit, match="no category, description column"):
        build(tmp_path / "l.csv", tmp_path / "db", embedder)


@pytest.mark.slow
def test_query_with_an_image_describes_it_first(db, tiny_hf, tiny_loaded, tmp_path):
    path = tmp_path / "query.png"
    Image.fromarray(data.coffee()).resize((96, 64)).save(path)
    proc = subprocess.run([sys.executable, "-m", "llava.tasks.retrieval", "query", "--db", str(db), "--image",
                           str(path), "--model-path", str(tiny_hf), "-k", "4", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["query"] == describe(tiny_loaded, Image.open(path).convert("RGB"))
    assert len(result["results"]) == 4 and result["mode"] == "similar"


@pytest.fixture(scope="module")
def clip_db(tmp_path_factory, embedder, tiny_clip):
    d = tmp_path_factory.mktemp("clip-retrieval")
    (d / "labels.csv").write_text(CATALOGUE + "missing.jpg,An image that is not there.,shoes,,shoes,1.0\n")
    for i, line in enumerate(CATALOGUE.splitlines()[1:]):
        Image.new("RGB", (40, 40), (37 * i % 256, 200 - 29 * i, 60 + 25 * i)).save(d / line.split(",")[0])
    clip = ClipModel(f"local-dir:{tiny_clip}")
    assert build(d / "labels.csv", d / "db", embedder, image_root=str(d), clip=clip) == 6  # missing.jpg left out
    return d, clip


def test_search_by_image_embedding_finds_the_same_image_first(clip_db, embedder):
    d, clip = clip_db
    index = Index(d / "db", embedder, clip)
    for name in ("car1.jpg", "sock1.jpg"):
        result = index.search(None, k=3, image=Image.open(d / name).convert("RGB"))
        assert result["by"] == "image embedding" and result["results"][0]["image"] == name
        assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    # Text-to-image through CLIP's text tower works on the same column.
    assert len(index.search("a red car", k=2)["results"]) == 2


def test_image_search_needs_a_table_with_that_clip_model(db, embedder, clip_db):
    with pytest.raises(SystemExit, match="has image embeddings from no model"):
        Index(db, embedder, clip_db[1])


# --- bad input (issue 18) --------------------------------------------------------------------------


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["row-not-utf8", "bom", "crlf", "row-without-image"])
def test_labels_rows_that_cannot_be_used_are_named_and_the_rest_built(tmp_path, run_main, kind):
    rows = CATALOGUE.encode().splitlines(keepends=True)
    extra = {"row-not-utf8": b"caf\xe9.jpg,Un caf\xe9 cr\xe8me.,drinks,,drinks,1.0\n",
             "row-without-image": b",A thing with no image.,things,,things,1.0\n"}.get(kind, b"")
    data = b"".join(rows) + extra
    data = data.replace(b"\n", b"\r\n") if kind == "crlf" else data
    data = b"\xef\xbb\xbf" + data if kind == "bom" else data
    (tmp_path / "labels.csv").write_bytes(data)
    result = run_main(retrieval, ["build", "--labels", tmp_path / "labels.csv", "--db", tmp_path / "db"],
                      expect_code=0)
    assert "6 items ->" in result.out
    if extra:
        assert f"{tmp_path / 'labels.csv'}:8: " in result.err and "left out" in result.err


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["db-is-a-file", "labels-a-directory", "labels-missing"])
def test_a_bad_build_path_is_named_before_any_work(tmp_path, run_main, kind):
    (tmp_path / "labels.csv").write_text(CATALOGUE)
    (tmp_path / "a-file").write_text("x")
    labels, db, message = {
        "db-is-a-file": (tmp_path / "labels.csv", tmp_path / "a-file", f"--db {tmp_path / 'a-file'}: is a file"),
        "labels-a-directory": (tmp_path, tmp_path / "db", f"--labels {tmp_path}: is a directory"),
        "labels-missing": (tmp_path / "nope.csv", tmp_path / "db", f"--labels {tmp_path / 'nope.csv'}: no such file"),
    }[kind]
    result = run_main(retrieval, ["build", "--labels", labels, "--db", db])
    assert result.code == 1 and message in result.err
    assert (tmp_path / "a-file").read_text() == "x" and not (tmp_path / "db").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("flags, message", [
    (["-k", "0"], "-k/--top-k must be at least 1"),
    (["--by", "image"], "--by image needs --clip-model"),
    (["--device", "banana"], "--device 'banana': not a device"),
], ids=["top-k-0", "by-image-without-clip", "device-unknown"])
def test_a_bad_query_flag_is_refused_before_anything_loads(db, tmp_path, run_main, flags, message):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    result = run_main(retrieval, ["query", "--db", db, "--image", tmp_path / "q.png", "--model-path", model, *flags],
                      expect_code=2)
    assert message in result.err


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["not-json", "not-utf8", "no-embedder-field"])
def test_a_damaged_table_description_is_a_message(db, embedder, tmp_path, run_main, kind):
    broken = tmp_path / "broken.lancedb"
    shutil.copytree(db, broken)
    (broken / "llava_retrieval.json").write_bytes({"not-json": b"{", "not-utf8": b'{"embedder": "\xff"}',
                                                   "no-embedder-field": b"{}"}[kind])
    result = run_main(retrieval, ["query", "--db", broken, "--text", "shoes"])
    assert result.code == 1 and "llava_retrieval.json: unreadable" in result.err and "rebuild the table" in result.err

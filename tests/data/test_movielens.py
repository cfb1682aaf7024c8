"""The MovieLens importer on tiny files written here in each format (never real MovieLens data)."""

import csv

import pytest

from components import features as F
from data.movielens import (INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS, MovieLensImportError, import_movielens,
                            split_title)
from pipeline import cli


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _flags(*genres):
    from data.movielens import ML100K_GENRES

    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


@pytest.fixture
def ml100k(tmp_path):
    src = tmp_path / "ml-100k"
    src.mkdir()
    (src / "u.data").write_text("1\t10\t4\t881250949\n2\t20\t3\t891717742\n1\t20\t5\t878887116\n")
    (src / "u.item").write_bytes(
        ("10|Café Society (1995)|01-Jan-1995||http://x|" + _flags("Comedy", "Children's") + "\n"
         "20|Heat, The (1995)|01-Jan-1995||http://y|" + _flags("unknown") + "\n").encode("latin-1"))
    (src / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (src / "u1.base").write_text("1\t10\t4\t881250949\n2\t20\t3\t891717742\n")
    (src / "u1.test").write_text("1\t20\t5\t878887116\n")
    return src


def test_ml100k_full(ml100k, tmp_path):
    result = import_movielens(str(ml100k), str(tmp_path / "out"))
    assert result.format == "ml-100k" and result.interactions == {"all": 3} and result.users == 2
    assert _read(tmp_path / "out" / F.INTERACTIONS_FILE) == [
        list(INTERACTION_COLUMNS), ["1", "10", "4", "881250949"], ["2", "20", "3", "891717742"],
        ["1", "20", "5", "878887116"]]
    # Genre names exactly as the source spells them: `Children's` and the `unknown` flag are kept, not renamed.
    assert _read(tmp_path / "out" / F.ITEMS_FILE) == [
        ["item_id", "title", "genres", "year"], ["10", "Café Society", "Children's|Comedy", "1995"],
        ["20", "Heat, The", "unknown", "1995"]]
    assert _read(tmp_path / "out" / F.USERS_FILE)[:2] == [
        ["user_id", "gender", "age", "occupation", "zip_code"], ["1", "M", "24", "technician", "85711"]]
    assert list(ITEM_COLUMNS) == ["item_id", "title", "genres", "year"] and USER_COLUMNS[0] == "user_id"
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_ml100k_split_writes_train_and_test(ml100k, tmp_path):
    result = import_movielens(str(ml100k), str(tmp_path / "out"), split="u1")
    assert result.interactions == {"train": 2, "test": 1}
    assert [r[:2] for r in _read(tmp_path / "out" / "test" / F.INTERACTIONS_FILE)[1:]] == [["1", "20"]]
    for part in ("train", "test"):
        assert len(_read(tmp_path / "out" / part / F.ITEMS_FILE)) == 3
        assert len(_read(tmp_path / "out" / part / F.USERS_FILE)) == 3


def test_ml1m(tmp_path):
    src = tmp_path / "ml-1m"
    src.mkdir()
    (src / "ratings.dat").write_text("1::1193::5::978300760\n2::1::3::978302109\n")
    (src / "movies.dat").write_bytes("1193::One Flew (1975)::Drama\n1::Toy Story (1995)::Animation|Children's|Comedy\n"
                                     "5::Señor (2000)::(no genres listed)\n".encode("latin-1"))
    (src / "users.dat").write_text("1::F::1::10::48067\n")
    result = import_movielens(str(src), str(tmp_path / "out"))
    assert (result.format, result.interactions, result.items, result.users) == ("ml-1m", {"all": 2}, 3, 1)
    items = _read(tmp_path / "out" / F.ITEMS_FILE)
    assert items[2] == ["1", "Toy Story", "Animation|Children's|Comedy", "1995"]
    assert items[3] == ["5", "Señor", "", "2000"]  # `(no genres listed)` is the source's missing marker
    assert _read(tmp_path / "out" / F.USERS_FILE) == [list(USER_COLUMNS), ["1", "F", "1", "10", "48067"]]


def test_ml_latest_small(tmp_path):
    src = tmp_path / "ml-latest-small"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n")
    (src / "movies.csv").write_text('movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
                                    "3,Babylon 5 (1994–1998),Sci-Fi\n4,No Year Film,(no genres listed)\n")
    result = import_movielens(str(src), str(tmp_path / "out"))
    assert result.format == "ml-latest" and result.users == 0
    assert not (tmp_path / "out" / F.USERS_FILE).exists()
    assert _read(tmp_path / "out" / F.INTERACTIONS_FILE)[2] == ["1", "3", "3.5", "964981247"]
    assert _read(tmp_path / "out" / F.ITEMS_FILE)[1:] == [
        ["1", "American President, The", "Comedy|Drama|Romance", "1995"], ["3", "Babylon 5", "Sci-Fi", "1994"],
        ["4", "No Year Film", "", ""]]  # an unknown year is an empty field, never 0
    with open(tmp_path / "out" / F.INTERACTIONS_FILE) as f:
        assert f.readline().strip() == "user_id,item_id,rating,timestamp"


@pytest.mark.parametrize("title, expected", [("Toy Story (1995) ", ("Toy Story", 1995)),
                                             ("Babylon 5 (1994–1998)", ("Babylon 5", 1994)),
                                             ("Untitled", ("Untitled", None))])
def test_split_title(title, expected):
    assert split_title(title) == expected


def test_errors_name_the_path_or_line(tmp_path, ml100k):
    with pytest.raises(MovieLensImportError, match="not a directory"):
        import_movielens(str(tmp_path / "missing"), str(tmp_path / "out"))
    with pytest.raises(MovieLensImportError, match="no MovieLens layout recognised"):
        import_movielens(str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(MovieLensImportError, match="split 'u9'"):
        import_movielens(str(ml100k), str(tmp_path / "out"), split="u9")
    (ml100k / "u.data").write_text("1\t10\t4\t881250949\n1\t10\n")
    with pytest.raises(MovieLensImportError, match=r"u.data:2: expected 4"):
        import_movielens(str(ml100k), str(tmp_path / "out2"))
    assert not (tmp_path / "out2" / F.INTERACTIONS_FILE).exists()
    assert not list((tmp_path / "out2").glob("*.tmp"))


def test_cli_imports_and_reports_errors_in_one_line(ml100k, tmp_path, capsys):
    assert cli.main(["import-movielens", str(ml100k), str(tmp_path / "out"), "--split", "u1"]) == 0
    assert "imported ml-100k: 2 ratings (train), 1 ratings (test), 2 items, 2 users" in capsys.readouterr().out
    assert cli.main(["import-movielens", str(tmp_path / "nope"), str(tmp_path / "x")]) == cli.EXIT_ERROR
    assert capsys.readouterr().err.strip().count("\n") == 0

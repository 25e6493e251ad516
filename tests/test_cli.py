"""The `zoo` command line, called in-process (cli.main.main) against the module's real database.

Settings come from the environment (DATABASE_URL, ZOO_HOME, CIVITAI_BASE_URL), set with monkeypatch; output is
read with capsys. Counts are the facts of tests/fixtures/README.md.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cli import main as cli

try:
    from tests.helpers import FIXTURES, truncate_all
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from helpers import FIXTURES, truncate_all

SNAPSHOT = Path(__file__).resolve().parent.parent / "crawlers" / "snapshot" / "sample_models.jsonl"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, engine: Engine) -> Engine:
    """The CLI pointed at this module's (migrated) database, with its home in a temporary folder."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    monkeypatch.delenv("CIVITAI_BASE_URL", raising=False)
    return engine


def _flat(text_: str) -> str:
    return " ".join(text_.split())


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _last_json(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    return json.loads(lines[-1])


def test_refresh_from_a_dump_then_summary_json(env: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    truncate_all(env)
    code = cli.main(["refresh", "--dump", str(FIXTURES / "civitai_2023.jsonl"), "--workers", "1", "--json"])
    out = capsys.readouterr().out
    run = json.loads(out)  # stdout is the JSON alone (Dagster greets a new instance on stderr)
    assert code == 0, run
    assert run["success"] is True
    assert run["failures"] == []
    assert run["checks"] and all(run["checks"].values()), run["checks"]
    assert {"civitai_models_raw", "zoo_catalogue", "image_resources", "adapter_checkpoint_links"} <= set(run["assets"])
    assert run["assets"]["civitai_models_raw"]["items_received"] == 9
    assert run["assets"]["zoo_catalogue"]["normalised"] == 9
    assert run["assets"]["zoo_stats"]["models"] == 9
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:  # what `dagster dev` shows
        assert {r.job_name for r in instance.get_runs()} == {"refresh_zoo", "describe_and_embed",
                                                             "build_retrieval_index"}

    assert cli.main(["summary", "--json"]) == 0
    summary = _last_json(capsys.readouterr().out)
    tables = summary["tables"]
    # README civitai_2023.jsonl: 9 models, 10 versions, 11 files, 29 image entries, 11 links; nothing quarantined
    assert tables["models_raw"] == 9
    assert tables["models"] == 9
    assert tables["model_versions"] == 10
    assert tables["model_files"] == 11
    assert tables["images"] == 29
    assert tables["adapter_checkpoint_links"] == 11
    assert tables["quarantine"] == 0
    by_type = {row["type"]: row for row in summary["by_type"]}
    assert {t: (r["models"], r["nsfw_models"], r["versions"], r["served_versions"]) for t, r in by_type.items()} == {
        "Checkpoint": (3, 0, 4, 4),
        "LORA": (4, 2, 4, 2),
        "TextualInversion": (1, 0, 1, 1),
        "Hypernetwork": (1, 0, 1, 1),
    }
    assert sum(r["images"] for r in by_type.values()) == 29
    # top links are the most co-used SFW pairs: the two 3-image pairs have NSFW adapters (100202, 100203)
    top = summary["top_links"]
    assert 0 < len(top) <= 5
    assert not {"Velvet Hour Lighting", "Midnight Pinup Poses"} & {row["adapter_name"] for row in top}
    assert top[0]["image_count"] == 2
    assert [row["image_count"] for row in top] == sorted((row["image_count"] for row in top), reverse=True)

    # the summary agrees with the database itself
    with env.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM models")).scalar_one() == 9


def test_refresh_is_repeatable(env: Engine, capsys: pytest.CaptureFixture[str]):
    truncate_all(env)
    dump = str(FIXTURES / "civitai_2023.jsonl")
    assert cli.main(["refresh", "--dump", dump, "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    assert cli.main(["refresh", "--dump", dump, "--workers", "1", "--json"]) == 0
    run = _last_json(capsys.readouterr().out)
    assert run["assets"]["civitai_models_raw"]["models_unchanged"] == 9
    assert run["assets"]["civitai_models_raw"]["models_new"] == 0
    assert run["assets"]["zoo_catalogue"]["pending"] == 0
    assert run["assets"]["image_resources"]["skipped"] is True
    assert run["assets"]["adapter_checkpoint_links"]["skipped"] is True


def test_refresh_with_a_missing_dump_is_a_usage_error(env: Engine, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["refresh", "--dump", "/nonexistent/dump.jsonl"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "dump not found" in err and "/nonexistent/dump.jsonl" in err


@pytest.mark.parametrize("pages", ["0", "-1"])
def test_refresh_max_pages_below_one_is_a_usage_error(env: Engine, capsys: pytest.CaptureFixture[str], pages: str):
    assert cli.main(["refresh", "--max-pages", pages]) == 2
    assert "--max-pages must be at least 1" in _flat(capsys.readouterr().err)


def test_non_postgres_database_url_is_a_usage_error(env: Engine, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    assert cli.main(["summary", "--json"]) == 2
    captured = capsys.readouterr()
    err = _flat(captured.err)
    assert "configuration error" in err
    assert "DATABASE_URL" in err and "postgresql://" in err and "'mysql'" in err
    assert captured.out == ""
    assert cli.main(["refresh", "--dump", str(FIXTURES / "civitai_2023.jsonl")]) == 2
    assert "DATABASE_URL" in _flat(capsys.readouterr().err)


def test_non_http_civitai_base_url_is_a_usage_error(env: Engine, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("CIVITAI_BASE_URL", "ftp://x")
    assert cli.main(["refresh", "--max-pages", "1"]) == 2
    err = _flat(capsys.readouterr().err)
    assert "configuration error" in err and "CIVITAI_BASE_URL" in err and "ftp://x" in err


def test_civitai_base_url_with_api_path_is_a_usage_error(env: Engine, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("CIVITAI_BASE_URL", "https://civitai.com/api/v1")
    assert cli.main(["demo"]) == 2
    assert "site root" in _flat(capsys.readouterr().err)


def test_db_check_and_upgrade(env: Engine, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["db", "check"]) == 0
    assert "agree" in _flat(capsys.readouterr().err)
    assert cli.main(["db", "upgrade"]) == 0
    assert "head" in _flat(capsys.readouterr().err)


def test_unknown_command_is_a_usage_error(env: Engine, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fly"])
    assert exit_info.value.code == 2


def test_demo_without_civitai_uses_the_shipped_snapshot(env: Engine, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]):
    truncate_all(env)
    monkeypatch.setenv("CIVITAI_BASE_URL", _closed_port_url())
    assert cli.main(["demo", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "not reachable" in _flat(captured.err)
    assert "sample_models.jsonl" in _flat(captured.err)
    snapshot_lines = [line for line in SNAPSHOT.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(snapshot_lines) == 24
    with env.connect() as conn:
        models = conn.execute(text("SELECT count(*) FROM models")).scalar_one()
        nsfw = conn.execute(text("SELECT id FROM models WHERE nsfw ORDER BY id")).scalars().all()
        links = conn.execute(text("SELECT count(*) FROM adapter_checkpoint_links")).scalar_one()
        served_nsfw = conn.execute(text(
            "SELECT count(*) FROM served_model_versions s JOIN models m ON m.id = s.model_id WHERE m.nsfw"
        )).scalar_one()
    assert models == len(snapshot_lines)
    assert nsfw == [910006, 910024]  # README: the two flagged snapshot models
    assert links == 35  # README: 35 pairs in the snapshot
    assert served_nsfw == 0
    # the demo ends with the summary table on stdout
    assert "The zoo" in captured.out


def test_an_unreachable_database_is_one_line_and_exit_code_3(monkeypatch, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://zoo:secret@127.0.0.1:1/zoo")
    assert cli.main(["summary"]) == 3
    message = capsys.readouterr().err
    assert "cannot reach the database" in message and "Traceback" not in message and "secret" not in message

"""docs/operations.md names things that exist: links, compose variables, metrics, versions."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

import streams.app  # noqa: F401  (registers the worker's metrics)

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text("utf-8")


def test_relative_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", DOC)
    assert links
    for link in links:
        if "://" not in link:
            assert (ROOT / "docs" / link).resolve().exists(), f"docs/operations.md links to missing {link}"


def test_compose_variables_it_documents_are_the_ones_the_compose_file_reads() -> None:
    compose = (ROOT / "docker-compose.yml").read_text("utf-8")
    read = set(re.findall(r"\$\{([A-Z_]+)(?::?-[^}]*)?\}", compose))
    documented = {v for v in re.findall(r"`([A-Z][A-Z_]+)`", DOC) if v in read or v.startswith("COORDWATCH_") and "__" not in v}
    assert read <= documented, f"compose variables missing from the guide: {sorted(read - documented)}"
    assert documented <= read, f"the guide documents variables the compose file does not read: {sorted(documented - read)}"


def test_metrics_it_lists_are_served_by_the_worker() -> None:
    served = {m.name for m in REGISTRY.collect()}
    served |= {f"{n}_total" for n in served}
    listed = set(re.findall(r"`((?:coordwatch|process)_[a-z_]+)", DOC))
    assert listed, "the guide lists the worker's metrics"
    assert listed <= served, f"not served by the worker: {sorted(listed - served)}"


def test_version_constants_it_names_exist_where_it_says() -> None:
    for path, name in [
        ("streams/snapshots.py", "SNAPSHOT_VERSION"),
        ("detectors/pipeline.py", "STATE_VERSION"),
        ("detectors/co_action.py", "STATE_VERSION"),
        ("detectors/near_duplicate.py", "STATE_VERSION"),
        ("detectors/burst.py", "STATE_VERSION"),
    ]:
        assert name in DOC and path.split("/")[-1] in DOC
        assert re.search(rf"^\s*{name}\b.*=", (ROOT / path).read_text("utf-8"), re.M), f"{name} not in {path}"

"""The cluster's proxy configuration and log, without running the cluster (that is
tests/e2e/test_cluster.py): `cluster/kamailio.cfg` filled in as cluster.sh does passes Kamailio's own
check, and the proxy's per-call log lines are read back into one record per call."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.cluster import parse_proxy_log

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("kamailio") is None, reason="kamailio is not installed (make system-deps)")
def test_the_proxy_config_passes_kamailios_check(tmp_path: Path) -> None:
    text = (REPO / "cluster" / "kamailio.cfg").read_text()
    values = {
        "PROXY_IP": "127.0.77.10",
        "PROXY_PORT": "5060",
        "DISPATCHER_LIST": str(tmp_path / "dispatcher.list"),
        "DS_PING_S": "2",
        "FR_TIMER_MS": "1500",
        "CTL_SOCKET": str(tmp_path / "ctl"),
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    assert not re.findall(r"@[A-Z_]+@", text), "a placeholder cluster.sh does not fill"
    (tmp_path / "dispatcher.list").write_text(
        "1 sip:vbready@127.0.77.11:5060 0 0 duid=node1\n1 sip:vbready@127.0.77.12:5060 0 0 duid=node2\n"
    )
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(text)
    done = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    # Routing by call load needs algorithm 10 and its call table (the e2e call-load test checks the
    # load is kept up to date).
    for needed in ('ds_select_dst("1", "10")', '"ds_hash_size"'):
        assert needed in text, needed


def test_the_proxy_log_gives_one_record_per_call() -> None:
    log = "\n".join(
        [
            "x VBCLUSTER t=100.0 try ci=a dst=sip:vbready@127.0.77.11:5060",
            "x VBCLUSTER t=100.1 retry ci=a code=503 dst=sip:vbready@127.0.77.12:5060",
            "x VBCLUSTER t=100.3 reply ci=a code=200 src=127.0.77.12",
            "x VBCLUSTER t=101.0 try ci=b dst=sip:vbready@127.0.77.12:5060",
            "x VBCLUSTER t=101.2 reply ci=b code=200 src=127.0.77.12",
            "x VBCLUSTER t=108.0 byelost ci=b dst=sip:vbready@127.0.77.12:5060",
            "x VBCLUSTER t=109.0 nonode ci=c",
        ]
    )
    calls = parse_proxy_log(log)
    assert list(calls) == ["a", "b", "c"]
    a, b, c = calls["a"], calls["b"], calls["c"]
    assert (a.tried, a.retried_after, a.final_code, a.final_node) == (
        ["node1", "node2"],
        ["503"],
        200,
        "node2",
    )
    assert a.answered_at == 100.3 and a.retried and not a.bye_answered_by_proxy
    assert b.bye_answered_by_proxy and not b.retried and b.final_node == "node2"
    assert c.final_code == 503 and c.tried == []

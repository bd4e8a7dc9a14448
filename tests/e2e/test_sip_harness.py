"""The e2e harness itself (no Asterisk): the RTP pcap writer and the capture analyser agree."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from testkit.sip import (
    UAC_MEDIA_PORT,
    analyse,
    render_scenario,
    rtp_from,
    tone_pcm,
    ulaw_to_pcm,
    write_rtp_pcap,
)


def test_pcap_round_trip_timing_energy_and_dtmf(tmp_path: Path) -> None:
    pcap = tmp_path / "a.pcap"
    n = write_rtp_pcap(
        pcap, tone_pcm(1.0), lead_silence_s=0.5, total_s=3.0, dtmf=[(2.0, "7")], dst_port=UAC_MEDIA_PORT
    )
    assert n == 150  # 3 s of 20 ms packets; the DTMF event replaces audio packets 1:1
    a = analyse(pcap, media_port=UAC_MEDIA_PORT, sip_port=5061)
    assert len(a.rtp) == 150
    assert [p.seq for p in a.rtp] == list(range(1, 151))
    voiced = a.voiced
    assert len(voiced) == 50  # exactly the 1 s tone
    assert voiced[0].t == pytest.approx(0.5) and voiced[-1].t == pytest.approx(1.48)
    pacing = a.pacing()
    assert pacing.packets_per_s == pytest.approx(50.0)
    assert pacing.burst_packets == 0 and pacing.max_gap_s == pytest.approx(0.02)
    events = [p for p in a.rtp if p.pt == 101]
    assert len(events) == 8  # 5 updates + 3 end packets
    assert events[0].marker and not events[1].marker
    assert all(p.payload[0] == 7 for p in events)
    ends = [p for p in events if p.payload[1] & 0x80]
    assert len(ends) == 3
    assert {struct.unpack("!H", p.payload[2:4])[0] for p in ends} == {800}
    assert not a.bye_seen
    # The same packets, selected by source port (what a caller sent), decode back to the tone.
    sent = rtp_from(pcap, src_port=UAC_MEDIA_PORT)
    assert [p.seq for p in sent] == list(range(1, 151))
    pcm = ulaw_to_pcm(sent[30].payload)
    assert len(pcm) == 320 and sent[30].rms > 3000


def test_bad_dtmf_digit_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DTMF digit 'x' at 1.0 s"):
        write_rtp_pcap(tmp_path / "a.pcap", b"", dtmf=[(1.0, "x")])


def test_render_scenario_requires_every_placeholder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BYE_TIMEOUT_MS"):
        render_scenario("uac_wait_bye", tmp_path, exten="1", caller="2", pcap="x.pcap")
    path = render_scenario("uas", tmp_path, pcap="x.pcap", bye_timeout_ms=1000)
    text = path.read_text()
    assert re.search(r"@[A-Z_]+@", text) is None
    assert 'play_pcap_audio="x.pcap"' in text and 'timeout="1000"' in text

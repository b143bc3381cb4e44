"""The stages without a broker: frames, the cut into frames, and each stage fed, resumed and fed again."""

from __future__ import annotations

import functools
import math
import random
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import faust
import numpy as np
import orjson
import pytest
import zstandard
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.events import event_to_json, parse_messages, parse_with_origins
from detectors.pipeline import Pipeline
from detectors.synthetic import SyntheticStream
from streams import stages
from streams.app import in_step
from streams.config import Config, WorkParams
from streams.stages import (
    FRAME_CODEC,
    FRAME_SPAN,
    DetectStage,
    Frame,
    Framer,
    LinkStage,
    MergeStage,
    ParseCache,
    Send,
    Stage,
    chunks,
    link_topic,
    max_message_bytes,
    pack_frames,
    pack_routed,
    pack_span,
    pack_highwaters,
    parse_highwaters,
    unpack_frames,
    unpack_routed,
    work_topic,
    work_units,
)

#: the Kafka timestamp of the test input's messages (ms): 2027, after every event in it
RECEIVED_MS = 1_800_000_000_000

messages = st.lists(st.tuples(st.integers(0, 2**62), st.none() | st.binary(max_size=20), st.binary(max_size=200),
                              st.integers(-1, 2**50)), min_size=1, max_size=30)  # fmt: skip


@given(messages)
def test_frames_give_back_the_offsets_keys_values_and_times(msgs: list[tuple[int, bytes | None, bytes, int]]) -> None:
    offsets, keys, values, times = (list(x) for x in zip(*msgs))
    assert unpack_frames(pack_frames(offsets, keys, values, times)) == (offsets, keys, values, times)
    # a received frame names its messages from the span header, or without it from its bytes
    data = zstandard.ZstdCompressor().compress(pack_frames(offsets, keys, values, times))
    unzstd, codec = zstandard.ZstdDecompressor(), dict([FRAME_CODEC])
    with_span = Frame.received(data, codec | {FRAME_SPAN: pack_span(offsets)}, unzstd)
    without = Frame.received(data, codec, unzstd)
    assert with_span.span == without.span == (offsets[0], offsets[-1], len(offsets))
    assert with_span.parts == without.parts == (offsets, keys, values, times)
    # an older worker's frame (no times): the same messages, their times not known
    klen = [0xFFFFFFFF if k is None else len(k) for k in keys]
    old = (struct.pack(">I", len(values)) + b"".join(np.array(x, d).tobytes() for x, d in
           ((offsets, ">i8"), (klen, ">u4"), ([len(v) for v in values], ">u4"))) + b"".join(k or b"" for k in keys)
           + b"".join(values))  # fmt: skip
    assert unpack_frames(old) == (offsets, keys, values, [-1] * len(values))


@given(st.lists(st.integers(0, 100), min_size=1, max_size=50), st.integers(1, 150))
def test_chunks_cover_the_run_in_order_within_the_limit(sizes: list[int], limit: int) -> None:
    cuts = chunks(sizes, limit)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    for lo, hi in cuts:
        assert hi > lo
        assert sum(sizes[lo:hi]) <= limit or hi - lo == 1  # only a value alone may pass the limit


# -- the stages, driven as the worker drives them, without a broker -----------------------
class Msg(NamedTuple):
    """What the stages read of a Faust message."""

    offset: int
    headers: list[tuple[str, bytes]]
    key: bytes | None = None
    timestamp: float = 0.0  # when ingest sent it (seconds)


@functools.cache
def input_lines() -> list[bytes]:
    return [orjson.dumps(e) for e in SyntheticStream(seed=4, hours=3, rate=3, accounts=6000).events()]


def work_log(resend_every: int = 0, lines: list[bytes] | None = None) -> list[Msg | bytes]:
    """The work partition's messages: frames of 40 input messages (``lines``, default
    :func:`input_lines`) from one source partition; with ``resend_every``, each such frame is
    followed by a copy of the one before it (an ingest that restarted and sent its input again)."""
    lines, out, frames = lines or input_lines(), [], []
    headers = [("source_topic", b"ev"), ("source_partition", b"0")]
    for lo in range(0, len(lines), 40):
        n = len(lines[lo : lo + 40])
        frames.append(pack_frames(list(range(lo, lo + n)), [None] * n, lines[lo : lo + 40], [RECEIVED_MS] * n))
        out.append(frames[-1])
        if resend_every and len(frames) % resend_every == 0:
            out.append(frames[-2])
    return [Msg(i, headers) for i in range(len(out))], out  # type: ignore[return-value]


def drive(stage: Stage, msgs: list[Msg], values: list[bytes], cut: int | None = None) -> tuple[list[Send], Stage]:
    """Every message through ``stage``; at ``cut``, the stage is replaced by a fresh one
    loaded from its state and offsets (what a restart or a rebalance does)."""
    sent: list[Send] = []
    for i, (m, v) in enumerate(zip(msgs, values)):
        if i == cut:
            fresh = type(stage)(*stage._args)  # type: ignore[attr-defined]
            fresh.load(stage.state())
            fresh.offsets = dict(stage.offsets)
            stage = fresh
        if m.offset >= stage.next_offset:
            out = stage.handle(m, v)
            sent += out.sends + [(a.type, None, a.to_json(), None, None) for a in out.alerts]
    return sent, stage


WHOLE = Config()
SHARDED = Config(work=WorkParams(shards={"burst": 3}))  # work units: near_duplicate, co_action, burst.0-2
# near_duplicate, co_action.objects.0-2, co_action (their merge), burst
OBJECTS = Config(work=WorkParams(shards={"co_action": 3}))
# near_duplicate.bands.0-1, near_duplicate (their merge), co_action.objects.0-1, co_action, burst
BANDS = Config(work=WorkParams(shards={"near_duplicate": 2, "co_action": 2}))
CONFIGS = {"whole": WHOLE, "sharded": SHARDED, "objects": OBJECTS, "bands": BANDS}


def detect_stage(u: int, partitions: int = 1, config: Config = WHOLE) -> DetectStage:
    args = (config, TP(work_topic(config), u), APP, ParseCache(config.events.max_event_bytes, config.events.max_ahead_s),
            [("ev", p) for p in range(partitions)])  # fmt: skip
    stage = DetectStage(*args)
    stage._args = args  # type: ignore[attr-defined]
    return stage


def routed(config: Config, msgs: list[Msg], values: list[bytes]) -> tuple[list[Msg], list[list[bytes]]]:
    """What ingest sends for each of these frames (``Framer``: a whole detector gets the
    frame, a shard the events of its keys, compressed): the messages (a frame's with the
    codec and span headers) and per work partition their values; a report is a report to
    every one."""
    framer = Framer(config, ParseCache(config.events.max_event_bytes, config.events.max_ahead_s))
    sent: list[Msg] = []
    out: list[list[bytes]] = [[] for _ in work_units(config)]
    for m, v in zip(msgs, values):
        headers = dict(m.headers)
        if "source_topic" in headers:
            src = (headers["source_topic"].decode(), int(headers["source_partition"]))
            parts = unpack_frames(v)
            per_unit, _ = framer(src, *parts)  # and the dead letters, which ingest sends
            m = m._replace(headers=[*m.headers, FRAME_CODEC, (FRAME_SPAN, pack_span(parts[0]))])
        else:
            per_unit = [v] * len(out)
        sent.append(m)
        for u, x in enumerate(per_unit):
            out[u].append(x)
    return sent, out


def link_stage(config: Config = WHOLE) -> LinkStage:
    stage = LinkStage(config, TP(link_topic(config), 0), APP)
    stage._args = (config, stage.tp, APP)  # type: ignore[attr-defined]
    return stage


APP = faust.App("test-stages", autodiscover=False)


def merge_stage(u: int, config: Config) -> MergeStage:
    stage = MergeStage(config, TP(work_topic(config), u), APP)
    stage._args = (config, stage.tp, APP)  # type: ignore[attr-defined]
    return stage


def merge_log(config: Config, runs: dict[int, list[Send]], u: int, seed: int = 0) -> tuple[list[Msg], list[bytes]]:
    """Work partition ``u`` (a merge): what the object parts in ``runs`` sent it, the parts
    interleaved at random (each in its order)."""
    sent = [[(h, v) for t, _, v, p, h in sends if t == work_topic(config) and p == u] for sends in runs.values()]
    sent = [x for x in sent if x]
    rng, heads, msgs, values = random.Random(seed), [0] * len(sent), [], []
    while any(h < len(x) for h, x in zip(heads, sent)):
        k = rng.choice([i for i, x in enumerate(sent) if heads[i] < len(x)])
        headers, value = sent[k][heads[k]]
        heads[k] += 1
        msgs.append(Msg(len(msgs), headers))  # type: ignore[arg-type]
        values.append(value)
    return msgs, values


def merged(config: Config, runs: dict[int, list[Send]], seed: int = 0) -> dict[int, list[Send]]:
    """``runs`` and, for each merge partition, what its stage sends, fed what the parts sent."""
    out = dict(runs)
    for u, unit in enumerate(work_units(config)):
        if not unit.framed:
            out[u] = drive(merge_stage(u, config), *merge_log(config, runs, u, seed))[0]
    return dict(sorted(out.items()))


@functools.cache
def detect_runs(name: str = "whole") -> dict[int, list[Send]]:
    config, (msgs, values) = CONFIGS[name], work_log()
    sent, per_unit = routed(config, msgs, values)
    units = work_units(config)
    return merged(config, {u: drive(detect_stage(u, config=config), sent, mine)[0]
                           for u, mine in enumerate(per_unit) if units[u].framed})  # fmt: skip


@pytest.mark.parametrize("name", CONFIGS)
def test_a_detect_stage_resumed_from_its_state_or_sent_input_again_sends_the_same(name: str) -> None:
    config = CONFIGS[name]
    msgs, per_unit = routed(config, *work_log(resend_every=5))
    runs, units = detect_runs(name), work_units(config)
    for (u, straight), mine in zip(runs.items(), per_unit):
        assert straight, f"unit {u} sent nothing"
        if not units[u].framed:  # a merge: fed the parts' segments, resumed half-way
            resumed, _ = drive(merge_stage(u, config), *merge_log(config, runs, u, seed=1), cut=len(straight) // 2)
        else:
            resumed, _ = drive(detect_stage(u, config=config), msgs, mine, cut=len(msgs) // 2 + 1)
        # the same link messages but for their work offsets, which the re-sent frames move
        # (a merge's: the alerts alike, sent with other messages as the parts interleave)
        if not units[u].framed:
            assert alerts_and_dead_letters(resumed) == alerts_and_dead_letters(straight), f"unit {u}"
        else:
            assert [_no_offset(s) for s in resumed] == [_no_offset(s) for s in straight], f"unit {u}"


def test_a_keyed_detector_in_shards_finds_what_it_finds_whole_each_shard_on_part_of_the_input() -> None:
    """Burst in three shards: together the alerts of the whole, each over about a third of the events."""
    whole, shards = detect_runs("whole")[2], [detect_runs("sharded")[u] for u in (2, 3, 4)]
    alerts = [alerts_and_dead_letters(x)[0] for x in (whole, *shards)]
    assert all(alerts) and sorted(a for x in alerts[1:] for a in x) == sorted(alerts[0])
    msgs, values = work_log()
    sizes = [sum(map(len, v)) for v in routed(SHARDED, msgs, values)[1]]
    assert all(size < 0.5 * sizes[0] for size in sizes[2:]), sizes


def _no_offset(send: Send) -> Send:
    topic, key, value, partition, headers = send
    if topic.endswith(".link"):
        head, _, alerts = value.partition(b"\n")
        value = orjson.dumps({k: v for k, v in orjson.loads(head).items() if k != "offset"}) + b"\n" + alerts
    return topic, key, value, partition, headers


@pytest.mark.parametrize("name", CONFIGS)
def test_the_link_stage_over_every_detector_publishes_what_replay_does(name: str) -> None:
    """Link messages of the three detectors (or burst's three shards) interleaved (as the
    link partition holds them), one of them delivered twice, the stage resumed half-way:
    replay's alerts, byte for byte, up to the tick replay has closed before its final
    advance (the last ticks stay open in a stream too)."""
    runs = [[s for s in sends if s[0].endswith(".link")] for sends in detect_runs(name).values()]
    order: list[bytes] = []
    for k in range(max(map(len, runs))):
        for r in runs:
            if k < len(r):
                order.append(r[k][2])
    order.insert(len(order) // 3, order[len(order) // 3 - 2])  # a detect stage sent one again
    msgs = [Msg(i, []) for i in range(len(order))]
    alerts, _ = drive(link_stage(CONFIGS[name]), msgs, order, cut=len(order) // 2)
    pipe = Pipeline.from_config(Config())
    events, _ = parse_messages(input_lines())
    want = [a.to_json() for a in pipe.process(events)]
    got = [v for _, _, v, _, _ in alerts]
    assert got == want and len(want) > 10


def test_the_stages_of_a_worker_taken_in_step_parse_each_frame_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust hands one worker's stages their frames in runs (5-10 frames of one partition,
    then another's). Ordered by when ingest sent each message (``streams.app.in_step``),
    the three stages take each frame while their shared parse cache holds it, here two
    frames, so it is parsed once; and each stage sends what it sends on its own."""
    config = WHOLE
    msgs, per_unit = routed(config, *work_log())
    msgs = [m._replace(timestamp=float(i)) for i, m in enumerate(msgs)]  # frame i sent to all at i
    frames = sum("source_topic" in dict(m.headers) for m in msgs)
    parses = []
    monkeypatch.setattr(stages, "parse_with_origins", lambda *a: parses.append(1) or parse_with_origins(*a))
    monkeypatch.setattr(ParseCache, "MAX_BYTES", 2 * max(map(len, input_lines())) * 40)

    def run(order: Callable[[list[Any]], list[Any]]) -> dict[int, list[Send]]:
        cache = ParseCache(config.events.max_event_bytes, config.events.max_ahead_s)
        units = [DetectStage(config, TP(work_topic(config), u), APP, cache, [("ev", 0)]) for u in range(3)]
        # Faust's order: runs of 5 messages of each partition in turn
        todo = [(units[u], m, per_unit[u][i]) for lo in range(0, len(msgs), 5) for u in range(3)
                for i, m in enumerate(msgs[lo : lo + 5], start=lo)]  # fmt: skip
        sent: dict[int, list[Send]] = {u: [] for u in range(3)}
        for stage, m, v in order(todo):
            out = stage.handle(m, v)
            sent[stage.tp.partition] += out.sends + [(a.type, None, a.to_json(), None, None) for a in out.alerts]
        return sent

    alone = {u: detect_runs()[u] for u in range(3)}
    parses.clear()
    assert run(in_step) == alone
    assert len(parses) == frames
    parses.clear()
    run(list)
    assert len(parses) > 2.9 * frames  # in Faust's runs each stage parses nearly every frame again


def test_a_stage_reads_only_the_span_of_a_frame_another_stage_parsed() -> None:
    """The stages of a worker share a frame's parse, so all but the first need only the
    frame's span header, never its bytes (decompressing and unpacking a frame of 20 000
    single events took 12 ms, each stage): given bytes that are no frame at all, the later
    stages send what each sends alone."""
    config = WHOLE
    msgs, per_unit = routed(config, *work_log())
    cache = ParseCache(config.events.max_event_bytes, config.events.max_ahead_s)
    units = [DetectStage(config, TP(work_topic(config), u), APP, cache, [("ev", 0)]) for u in range(3)]
    sent: dict[int, list[Send]] = {u: [] for u in range(3)}
    for i, m in enumerate(msgs):
        for u, stage in enumerate(units):
            value = b"not a frame" if u and "source_topic" in dict(m.headers) else per_unit[u][i]
            out = stage.handle(m, value)
            sent[u] += out.sends + [(a.type, None, a.to_json(), None, None) for a in out.alerts]
    assert sent == {u: detect_runs()[u] for u in range(3)}
    with pytest.raises(zstandard.ZstdError):  # the first stage does read the bytes
        DetectStage(config, TP(work_topic(config), 0), APP, ParseCache(config.events.max_event_bytes, config.events.max_ahead_s),
                    [("ev", 0)]).handle(msgs[0], b"not a frame")  # fmt: skip


# -- input spread over partitions -----------------------------------------------------------
def spread_frames(partitions: int) -> list[list[tuple[list[int], bytes]]]:
    """The input round robin over ``partitions`` (40 lines a message, as ``produce --spread``),
    each partition cut into frames of 3 messages: per partition, (offsets, frame) in order."""
    lines = input_lines()
    messages = [lines[lo : lo + 40] for lo in range(0, len(lines), 40)]
    out = []
    for p in range(partitions):
        mine = messages[p::partitions]
        out.append([(list(range(i, min(i + 3, len(mine)))), pack_frames(list(range(i, min(i + 3, len(mine)))),
                    [None] * len(mine[i : i + 3]), [b"[" + b",".join(m) + b"]" for m in mine[i : i + 3]],
                    [RECEIVED_MS] * len(mine[i : i + 3]))) for i in range(0, len(mine), 3)])  # fmt: skip
    return out


def work_messages(frames: list[list[tuple[list[int], bytes]]], order: list[int],
                  ingests: list[list[int]] | None = None, live: bool = False) -> tuple[list[Msg], list[bytes]]:  # fmt: skip
    """The work partition when ``ingests`` (default one, reading every partition) framed the
    partitions in ``order`` (one partition index per frame), four messages a second, each
    with the high watermarks of its ingest's partitions, after a report of each ingest from
    before the input came (every partition empty). The input is all written before it is
    read, or with ``live`` it is being written in ``order`` as it is read (each partition's
    high watermark is the end of its last frame so far: every partition is caught up)."""
    ingests = ingests or [list(range(len(frames)))]
    ends = {("ev", p): 0 if live else f[-1][0][-1] + 1 for p, f in enumerate(frames)}
    nxt = [0] * len(frames)
    msgs = [Msg(i, [("highwaters", pack_highwaters({("ev", p): (0, 0.0) for p in mine}))], timestamp=0.0)
            for i, mine in enumerate(ingests)]  # fmt: skip
    values = [pack_frames([], [], [], [])] * len(ingests)
    for p in order:
        offsets, frame = frames[p][nxt[p]]
        nxt[p] += 1
        if live:
            ends[("ev", p)] = offsets[-1] + 1
        at = len(msgs) / 4  # ingest learnt the high watermarks from a fetch just now
        mine = next(m for m in ingests if p in m)
        headers = [("highwaters", pack_highwaters({("ev", q): (ends[("ev", q)], at) for q in mine})),
                   ("source_topic", b"ev"), ("source_partition", str(p).encode())]  # fmt: skip
        msgs.append(Msg(len(msgs), headers, timestamp=at))
        values.append(frame)
    return msgs, values


def alerts_and_dead_letters(sends: list[Send]) -> tuple[list[bytes], list[Send]]:
    alerts = [line for t, _, v, _, _ in sends if t.endswith(".link") for line in v.split(b"\n")[1:]]
    return alerts, [x for x in sends if x[0] == WHOLE.topics.dead_letter]


def test_a_message_sent_twice_is_detected_once_and_each_detector_dead_letters_the_copy() -> None:
    """Input messages written twice (a producer's retry): each detect stage finds its events
    once, so the alerts are those of the input without the copies, and dead-letters each
    copy it dropped (reason duplicate, its unit named; from no one partition, so no source)."""
    lines = input_lines()
    sent, per_unit = routed(WHOLE, *work_log(lines=[*lines[:500], lines[499], *lines[500:600], lines[550], *lines[600:]]))
    sends = [x for u, mine in enumerate(per_unit) for x in drive(detect_stage(u), sent, mine)[0]]
    alerts, dead = alerts_and_dead_letters(sends)
    clean, _ = alerts_and_dead_letters([x for sends in detect_runs().values() for x in sends])
    assert alerts == clean
    got = sorted((dict(h)["detector"], dict(h)["reason"], "source_topic" in dict(h), v) for _, _, v, _, h in dead)
    copies = sorted(event_to_json(e) for e in parse_messages([lines[499], lines[550]])[0])
    assert got == sorted((u.name.encode(), b"duplicate", False, c) for u in work_units(WHOLE) for c in copies)


def test_an_event_dated_after_its_messages_timestamp_is_dead_lettered_and_changes_no_alert() -> None:
    """A clock ahead: an event an hour after its message's Kafka timestamp, early in the
    input. The first detect stage dead-letters it (future_ts, with its source offset) and
    every stage sends the alerts of the input without it; with the check off it would have
    made nearly every later event late."""
    lines = input_lines()
    ahead = orjson.dumps({"ts": RECEIVED_MS / 1000 + 3600, "account_id": "skewed", "action": "post", "text": "ahead"})

    def run(config: Config, log: list[bytes]) -> tuple[list[bytes], list[Send]]:
        sent, per_unit = routed(config, *work_log(lines=log))
        sends = [x for u, mine in enumerate(per_unit) for x in drive(detect_stage(u, config=config), sent, mine)[0]]
        return alerts_and_dead_letters(sends)

    clean, _ = run(WHOLE, lines)
    alerts, dead = run(WHOLE, [*lines[:100], ahead, *lines[100:]])
    assert clean and alerts == clean
    assert [(dict(h)["reason"], dict(h)["source_offset"], v) for _, _, v, _, h in dead] == [(b"future_ts", b"100", ahead)]
    off = Config(events={"max_ahead_s": 0})
    alerts, dead = run(off, [*lines[:100], ahead, *lines[100:]])
    assert len(dead) > 0.9 * len(lines) and {dict(h)["reason"] for *_, h in dead} == {b"late"} and not alerts


@pytest.mark.parametrize("name", CONFIGS)
def test_input_spread_over_partitions_gives_the_alerts_of_one_partition_in_any_interleaving(name: str) -> None:
    """Three partitions framed in turn, or one after another (a backlog that ingest reads
    partition by partition), or by two ingests of which one starts late, or while a batching
    producer writes them with partition 0 three frames (minutes of event time) behind the
    others: no event is late, and each detector finds what it finds on the input in one
    partition; a stage resumed from its state sends what it would have sent."""
    frames = spread_frames(3)
    turns = [p for k in range(max(map(len, frames))) for p in range(3) if k < len(frames[p])]
    backlog = [p for p in range(3) for _ in frames[p]]
    # two ingests; the one reading partition 2 fetches only once the other is through
    late_one = [p for k in range(max(map(len, frames))) for p in range(2) if k < len(frames[p])] + [2] * len(frames[2])
    behind = [p for _, p in sorted((k + (3 if p == 0 else 0), p) for p in range(3) for k in range(len(frames[p])))]
    config = CONFIGS[name]
    units = work_units(config)
    got: dict[int, dict[int, list[Send]]] = {k: {} for k in range(4)}  # per order, what each unit sent
    for u, straight in detect_runs(name).items():
        if not units[u].framed:
            continue  # a merge: below, over its parts' output
        cases = ((turns, None, False), (backlog, None, False), (late_one, [[0, 1], [2]], False), (behind, None, True))
        for k, (order, ingests, live) in enumerate(cases):
            msgs, per_unit = routed(config, *work_messages(frames, order, ingests, live))
            values = per_unit[u]
            got[k][u], _ = drive(detect_stage(u, partitions=3, config=config), msgs, values)
        # a stage restored a third of the way in (from its state and offsets) sends the same
        assert drive(detect_stage(u, partitions=3, config=config), msgs, values, cut=len(msgs) // 3)[0] == got[k][u], f"unit {u}"
    for k, runs in got.items():
        for u, sends in merged(config, runs, seed=k).items():
            alerts, dead = alerts_and_dead_letters(sends)
            assert dead == [], f"detector {u}: {len(dead)} dead letters, e.g. {dead[0][4]}"
            # once all three are caught up the ticks close to the newest event, as in one partition
            assert alerts == alerts_and_dead_letters(detect_runs(name)[u])[0], f"detector {u}"


def test_a_partition_with_nothing_new_holds_no_tick_but_one_not_heard_of_or_stale_does() -> None:
    frames = spread_frames(1)[0]
    end = frames[-1][0][-1] + 1

    def closed_after(report: Callable[[int], int | None], config: Config = WHOLE) -> float:
        """Burst's last closed tick once partition 0 is read, one frame a second, each after
        a report of partition 1's high watermark ``report(i)`` from its ingest (None: none)."""
        stage = detect_stage(2, partitions=2, config=config)
        msgs, values = [], []
        for i, (_, frame) in enumerate(frames):
            if (highwater := report(i)) is not None:
                msgs.append(Msg(len(msgs), [("highwaters", pack_highwaters({("ev", 1): (highwater, i)}))], timestamp=i))
                values.append(pack_frames([], [], [], []))
            p0 = [("highwaters", pack_highwaters({("ev", 0): (end, i)})),
                  ("source_topic", b"ev"), ("source_partition", b"0")]  # fmt: skip
            msgs.append(Msg(len(msgs), p0, timestamp=i))
            values.append(frame)
        drive(stage, msgs, values)
        return stage.detection.closed

    assert closed_after(lambda i: None) == -math.inf  # partition 1 never reported: it may hold the oldest events
    caught_up = closed_after(lambda i: 0)
    assert caught_up > 0  # partition 1 is empty: the ticks close on partition 0's events
    assert len(frames) < 600  # seconds: within work.idle_s = 600 it holds them all
    assert closed_after(lambda i: 0, Config(work=WorkParams(idle_s=600))) == -math.inf
    stale = closed_after(lambda i: 0 if i == 0 else None)  # its ingest stopped: it may have input again
    assert -math.inf < stale < caught_up
    # reports ahead of its frames: it holds while the reports move, and STALL_S after
    # (a partition that ends in a transaction marker never reaches its high watermark)
    assert closed_after(lambda i: i + 1) == -math.inf
    assert closed_after(lambda i: 1) == caught_up


@given(st.dictionaries(st.tuples(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True), st.integers(0, 10_000)),
                       st.tuples(st.integers(0, 2**62), st.integers(0, 2**45).map(lambda ms: ms / 1000)),
                       max_size=8))  # fmt: skip
def test_highwaters_header_gives_back_the_partitions_offsets_and_times(reports: dict[tuple[str, int], Any]) -> None:
    assert dict(parse_highwaters(pack_highwaters(reports))) == reports


def test_a_shard_given_a_frame_cut_across_one_it_has_taken_takes_only_the_new_messages_events() -> None:
    """An ingest that restarted re-sends from its committed offset, cut into other frames: a
    shard (burst.1) takes, of a frame that overlaps what it has, the events of the messages
    it has not (envelopes of 7 events: an event's message decides), and finds what it finds
    on frames that never overlap."""
    lines = input_lines()
    messages = [b"[" + b",".join(lines[i : i + 7]) + b"]" for i in range(0, len(lines), 7)]
    headers = [("source_topic", b"ev"), ("source_partition", b"0")]

    def log(bounds: list[tuple[int, int]]) -> tuple[list[Msg], list[bytes]]:
        values = [pack_frames(list(range(a, b)), [None] * (b - a), messages[a:b], [RECEIVED_MS] * (b - a))
                  for a, b in bounds]  # fmt: skip
        return [Msg(i, headers) for i in range(len(values))], values

    even = [(a, min(a + 40, len(messages))) for a in range(0, len(messages), 40)]
    overlapping = [x for a, b in even for x in ([(a, b)] if a % 120 else [(a, b), (max(a - 25, 0), b + 15)])]
    got = []
    for bounds in (even, overlapping):
        msgs, values = log(bounds)
        sent, per_unit = routed(SHARDED, msgs, values)
        sends, _ = drive(detect_stage(3, config=SHARDED), sent, per_unit[3])
        got.append(alerts_and_dead_letters(sends))
    assert got[0][0] and got[1] == got[0]


def test_a_routed_frame_stays_within_the_largest_message_a_worker_sends() -> None:
    """Worst cases for a shard's part of a frame of ``Framer.frame_bytes``: texts of nothing but
    hashtags and URLs (both extracted beside the text), tiny events without ids (derived), and
    one message alone of ``max_event_bytes``; every event in the shard (one hashtag each)."""
    config = Config(work=WorkParams(shards={"burst": 2}))
    framer = Framer(config, ParseCache(config.events.max_event_bytes, config.events.max_ahead_s))
    limit = max_message_bytes(config)
    tag = next(f"t{i}" for i in range(100) if framer.routers["burst"].route(  # a hashtag of shard 0
        parse_messages([orjson.dumps({"ts": 1.0, "account_id": "a", "action": "post", "text": f"#t{i}"})])[0],
        2)[0].size)  # fmt: skip
    dense = orjson.dumps({"ts": 1.0, "account_id": "a", "action": "post",
                          "text": " ".join([f"#{tag}"] + [f"#x{i} https://e.com/{i}" for i in range(40)])})  # fmt: skip
    tiny = orjson.dumps({"ts": 1.0, "account_id": "a", "action": "like", "hashtags": [tag]})
    huge = b"[" + b",".join([tiny] * (config.events.max_event_bytes // (len(tiny) + 1) - 1)) + b"]"
    for one, count in ((dense, framer.frame_bytes // len(dense)), (tiny, framer.frame_bytes // len(tiny)), (huge, 1)):
        frames, _ = framer(("ev", 0), list(range(count)), [None] * count, [one] * count, [RECEIVED_MS] * count)
        shard = unpack_routed(zstandard.ZstdDecompressor().decompress(frames[2]))
        assert len(shard[4]) > 0 and max(map(len, frames)) <= limit, (len(one), len(frames[2]), limit)


def test_a_compressed_frame_of_what_does_not_compress_stays_within_the_largest_message() -> None:
    """Ingest frames any input (bytes that are not JSON are dead-lettered by a stage): a whole
    frame of random bytes, the most input it frames (``frame_bytes``, then one message of
    ``max_event_bytes``), compressed, still fits; what a stage reads back is the frame."""
    config = Config()
    framer = Framer(config, ParseCache(config.events.max_event_bytes, config.events.max_ahead_s))
    rng = random.Random(5)
    values = [rng.randbytes(64 << 10) for _ in range(framer.frame_bytes // (64 << 10) - 1)]
    values.append(rng.randbytes(config.events.max_event_bytes))
    offsets, keys, times = list(range(len(values))), [None] * len(values), [RECEIVED_MS] * len(values)
    frames, _ = framer(("ev", 0), offsets, keys, values, times)
    assert min(map(len, frames)) > sum(map(len, values)) > framer.frame_bytes  # it did not compress
    assert max(map(len, frames)) <= max_message_bytes(config)
    assert unpack_frames(zstandard.ZstdDecompressor().decompress(frames[0])) == (offsets, keys, values, times)


@settings(deadline=None)  # the first example parses the input
@given(st.integers(0, 2**62), st.lists(st.tuples(st.integers(0, 2**62), st.floats(0, 4e9)), max_size=30), st.data())
def test_routed_frames_give_back_the_offsets_times_members_and_events(nxt: int, rows: list[tuple[int, float]],
                                                                      data: st.DataObject) -> None:  # fmt: skip
    offsets, times = np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows])
    members = np.array(sorted(data.draw(st.sets(st.integers(0, max(len(rows) - 1, 0)), max_size=len(rows)))
                              if rows else []), dtype=np.int64)  # fmt: skip
    events = parse_messages(input_lines()[: members.size])[0][: members.size]
    got = unpack_routed(pack_routed(nxt, offsets, times, members, events))
    assert got[0] == nxt and got[4] == events
    assert all(np.array_equal(a, b) for a, b in zip(got[1:4], (offsets, times, members)))

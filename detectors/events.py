"""The event contract: bytes from Kafka (or one JSONL line) in, a typed :class:`Event` or a
machine-readable :class:`Rejection` out.

The parser never raises on input: a stream worker must not die on one bad message, and every
rejection carries a stable ``reason`` (counted in metrics, routed to a dead-letter topic) and
the offending bytes. The contract, every reason and the derived-id rule are in ``docs/events.md``.

Hot-path notes (measured, see ``streams/benchmarks/parse.py``): :class:`Event` is a NamedTuple
because it is built once per event and tuple construction costs ~0.1 µs against ~0.75 µs for
a frozen slotted dataclass; regexes only run when a substring precheck (``'#'``, ``'://'``)
says they can match; derived ids are hashed a batch at a time (one numpy pass per message,
or per :func:`parse_messages` call); a decoded object becomes its event's ``extra`` (fields
popped, no copy); the usual required fields pass one combined test; canonical URLs are
memoised. Many messages at once go through :func:`parse_messages` (no result list per
message), which inlines the usual event's checks (see :func:`_fields`): on the generator mix
(691 k lines in 7000-line calls, both versions alternating in one process) 1.39 s -> 1.30 s.
It runs the elements of envelopes through the same path, each message decoded once: 1.42-1.56x
on 100-event envelopes (where it used to hand them to :func:`parse_message`), 0.95-1.00x on
lines (an inner loop per message). Not done, measured: one ``orjson.loads`` of a whole chunk
of lines joined into an array was no faster than a call per line here, and a wrong line can
be hidden by the join (``1,2`` and ``[3`` + ``4]`` give as many elements as lines), so lines
are decoded one by one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat, takewhile
from typing import Any, NamedTuple, NoReturn
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson

from sketches.errors import CoordwatchError
from sketches.hashing import hash_strings

#: Messages larger than this many bytes are rejected ``too_large`` before parsing
#: (same default as ``[events] max_event_bytes``).
MAX_EVENT_BYTES = 1 << 20
#: Latest accepted ``ts``: 2100-01-01T00:00:00Z. A fixed bound (not "now + slack"), so a
#: replay rejects exactly what the live run did; it also catches millisecond timestamps
#: (1.6e12), the most common producer bug. (``future_ts`` bounds a message's events by when
#: it was received: the Kafka record's timestamp, which a re-read gives again.)
MAX_TS = 4_102_444_800.0

_COMMON_ACTIONS = frozenset(("post", "share", "retweet", "quote", "reply", "comment", "like", "follow"))
_ACTION_RE = re.compile(r"[a-z][a-z_]*")
# http(s) URLs in free text; brackets and quotes end a URL, trailing punctuation is not part of
# it. A case-insensitive scheme defeats re's literal-prefix scan (2.5x slower), so that pattern
# only runs on texts containing "Http" or "HTTP".
_URL_TAIL = r"""://[^\s<>"'()\[\]{}]*[^\s<>"'()\[\]{}.,;:!?]"""
_URL_RE = re.compile("https?" + _URL_TAIL)
_URL_ANYCASE_RE = re.compile("(?i:https?)" + _URL_TAIL)
# '#' + a word with at least one letter ("#1" is not a tag), not after a word character, '/',
# '&' or '#' (URL fragments, "&#x27;"). The lookbehind sits after the '#' so re can still scan
# for the literal '#' (a leading lookbehind is 5x slower).
_TAG_RE = re.compile(r"#(?<![\w&/#]#)(\w*[^\W\d_]\w*)")
_TRACKING_PARAMS = frozenset(("fbclid", "gclid"))
_new_tuple = tuple.__new__


class Event(NamedTuple):
    """One validated, normalised event (field meanings: ``docs/events.md``)."""

    ts: float  # unix seconds
    account_id: str
    action: str
    event_id: str  # given, or derived from the content ("d:" + 16 hex)
    text: str | None
    urls: tuple[str, ...]  # url + urls + URLs in text, canonical (canonical_url); de-duplicated, in order
    object_id: str | None
    hashtags: tuple[str, ...]  # hashtags + #tags in text; casefolded, no '#', de-duplicated
    extra: dict[str, Any]  # every other input field, untouched

    @property
    def domains(self) -> tuple[str, ...]:
        """Distinct domains of :attr:`urls` (see :func:`url_domain`), in order."""
        return tuple(dict.fromkeys(d for d in map(url_domain, self.urls) if d))


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why some bytes are not an event: ``reason`` is stable and machine-readable, ``detail``
    is for humans, ``raw`` the offending bytes, ``index`` the position inside an envelope."""

    reason: str
    detail: str
    raw: bytes
    index: int | None = None


class _Bad(CoordwatchError):
    """Internal control flow: one field failed validation (never escapes this module)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def parse_event(raw: bytes, max_bytes: int = MAX_EVENT_BYTES) -> Event | Rejection:
    """Parse one JSON object (a Kafka message or a JSONL line)."""
    if len(raw) > max_bytes:
        return _too_large(raw, max_bytes)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return _undecodable(raw, e)
    if type(obj) is not dict:
        return _not_object(obj, raw)
    return _one(obj, raw)


def parse_message(raw: bytes, max_bytes: int = MAX_EVENT_BYTES, limit: float = math.inf) -> list[Event | Rejection]:
    """Parse a message holding one JSON object or an envelope (a JSON array of objects).

    A bad element of an envelope becomes a Rejection with its ``index`` and its re-serialised
    bytes; the other elements still parse. ``max_bytes`` bounds the whole message; an event
    dated after ``limit`` is rejected ``future_ts`` (:func:`future_limits`).
    """
    if len(raw) > max_bytes:
        return [_too_large(raw, max_bytes)]
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return [_undecodable(raw, e)]
    if type(obj) is dict:
        return [_one(obj, raw, limit)]
    if type(obj) is list:
        if obj:
            return _envelope(obj, raw, limit)
        return [_empty_envelope(raw)]
    return [_not_object(obj, raw, "a JSON object or array")]


def future_limits(received: np.ndarray, max_ahead_s: float) -> list[float]:
    """The latest ``ts`` accepted in a message received at each of ``received`` (unix
    seconds: the Kafka record's timestamp, or when a replay started; negative: not known, no
    limit), ``events.max_ahead_s`` later (0: no limit). One event dated ahead of its time
    moves its partition's event time with it, and every event after it more than the
    lateness bound behind would be dropped as late; at most the lateness bound ahead, it
    makes no on-time event late."""
    if max_ahead_s <= 0:
        return [math.inf] * len(received)
    return np.where(received >= 0, received + max_ahead_s, math.inf).tolist()  # type: ignore[no-any-return]


def parse_messages(
    messages: Sequence[bytes], max_bytes: int = MAX_EVENT_BYTES, limits: Iterable[float] | None = None
) -> tuple[list[Event], list[tuple[int, Rejection]]]:
    """Parse many messages (Kafka messages, JSONL lines), each one exactly as
    :func:`parse_message` would: the events of all of them in order, and every rejection
    with the position of its message in ``messages`` (rejections in order too).
    ``limits``: per message the latest ``ts`` it may hold (:func:`future_limits`), or None.

    The batch form for the hot path: no result list per message, and the ids derived for
    the whole call are hashed in one pass (a single call of ``parse_message`` per event
    without ``event_id`` pays about 13 µs for its hash).
    """
    events, rejected, _ = parse_with_origins(messages, max_bytes, limits)
    return events, rejected


def parse_with_origins(
    messages: Sequence[bytes], max_bytes: int = MAX_EVENT_BYTES, limits: Iterable[float] | None = None
) -> tuple[list[Event], list[tuple[int, Rejection]], np.ndarray]:
    """:func:`parse_messages`, and for each event the position of its message in ``messages``.

    One ``orjson.loads`` per message, then the objects of a message (one, or an envelope's)
    through the inlined usual-event path (see :func:`_fields`): an envelope element is
    validated as :func:`_envelope` would (a rejection carries its index and the element as
    decoded afresh). :func:`parse_message` is the reference it is tested against."""
    if limits is None:
        limits = repeat(math.inf)
    starts: list[int] = []  # per message, how many events came before it
    mark = starts.append
    events: list[Event] = []
    rejected: list[tuple[int, Rejection]] = []
    derive: list[int] = []  # positions in events of those whose id is derived
    canonical: list[str] = []
    loads = orjson.loads
    append = events.append
    common, casefold = _COMMON_ACTIONS, str.casefold
    for i, (raw, limit) in enumerate(zip(messages, limits)):
        mark(len(events))
        if len(raw) > max_bytes:
            rejected.append((i, _too_large(raw, max_bytes)))
            continue
        try:
            objs = loads(raw)
        except orjson.JSONDecodeError as e:
            rejected.append((i, _undecodable(raw, e)))
            continue
        envelope = type(objs) is list
        if not envelope:
            if type(objs) is not dict:
                rejected.append((i, _not_object(objs, raw, "a JSON object or array")))
                continue
            objs = (objs,)
        elif not objs:
            rejected.append((i, _empty_envelope(raw)))
            continue
        pristine: list[Any] | None = None  # an envelope decoded afresh, for its rejections
        for obj in objs:
            if type(obj) is not dict:  # an envelope's element
                rejected.append((i, _not_object(obj, _dump(obj), index=_element(i, starts, events, rejected))))
                continue
            # _event inlined for the usual event (see _fields): the same pops, tests and
            # result; any other event goes on to _fields' (or _event_with_id's) checks.
            pop = obj.pop
            event_id = pop("event_id", None)
            try:
                if type(event_id) is str and event_id:
                    ts = pop("ts", None)
                    account_id = pop("account_id", None)
                    action = pop("action", None)
                    text = pop("text", None)
                    url = pop("url", None)
                    object_id = pop("object_id", None)
                    if (
                        type(ts) is float
                        and 0.0 <= ts <= MAX_TS  # also false for NaN
                        and ts <= limit
                        and type(account_id) is str
                        and account_id
                        and type(action) is str
                        and action in common
                        and (text is None or type(text) is str)
                        and (url is None or type(url) is str)
                        and (object_id is None or type(object_id) is str)
                        and (not obj or ("urls" not in obj and "hashtags" not in obj))
                    ):
                        found = [url] if url else None
                        tags = None
                        if text is not None:
                            if "://" in text:
                                more = (_URL_ANYCASE_RE if "Http" in text or "HTTP" in text else _URL_RE).findall(text)
                                found = more if found is None else found + more
                            if "#" in text:
                                tags = list(map(casefold, _TAG_RE.findall(text)))
                        append(_make(ts, account_id, action, event_id, text, found, object_id or None, tags, obj))
                        continue
                    ev = _fields(obj, None, event_id, ts, account_id, action, text, url, object_id)
                else:
                    ev = _event_with_id(obj, event_id)
                if ev.ts > limit:
                    raise _future(ev.ts, limit)
            except _Bad as bad:
                if envelope:
                    if pristine is None:
                        pristine = loads(raw)
                    j = _element(i, starts, events, rejected)
                    rejected.append((i, Rejection(bad.reason, bad.detail, _dump(pristine[j]), j)))
                else:
                    rejected.append((i, Rejection(bad.reason, bad.detail, raw)))
                continue
            if not ev.event_id:  # a _Derive
                derive.append(len(events))
                canonical.append(ev.event_id.canonical)  # type: ignore[attr-defined]
            append(ev)
    if derive:
        for j, event_id in zip(derive, _derive_ids(canonical)):
            events[j] = _with_id(events[j], event_id)
    origins = np.searchsorted(np.array(starts, dtype=np.int64), np.arange(len(events)), side="right") - 1
    return events, rejected, origins


def _element(i: int, starts: list[int], events: list[Event], rejected: list[tuple[int, Rejection]]) -> int:
    """The index in message ``i``'s envelope of the element being parsed: each element
    before it gave one event or one rejection (counting is cheaper than enumerating)."""
    return len(events) - starts[i] + sum(1 for _ in takewhile(lambda r: r[0] == i, reversed(rejected)))


def pack_events(events: Sequence[Event]) -> bytes:
    """Normalised events as one JSON array of their fields (a worker hands them on): no
    names, and :func:`unpack_events` takes them back without validating again."""
    return orjson.dumps(list(map(tuple, events)))


def unpack_events(data: bytes) -> list[Event]:
    return [_new_tuple(Event, (r[0], r[1], r[2], r[3], r[4], tuple(r[5]), r[6], tuple(r[7]), r[8]))
            for r in orjson.loads(data)]  # fmt: skip


def parse_obj(obj: Any) -> Event | Rejection:
    """Validate an already-decoded JSON object (``raw`` of a rejection is re-serialised)."""
    if type(obj) is not dict:
        return _not_object(obj, _dump(obj))
    return _one(obj, None)  # _one copies it: the caller's dict stays untouched


def event_to_json(ev: Event) -> bytes:
    """Canonical JSON of a normalised event (sorted keys); ``parse_event`` gives it back equal.

    Raises ``TypeError`` only if ``extra`` holds non-JSON values, which can only come from a
    dict handed to :func:`parse_obj`.
    """
    out = dict(ev.extra)
    out["ts"] = ev.ts
    out["account_id"] = ev.account_id
    out["action"] = ev.action
    out["event_id"] = ev.event_id
    if ev.text is not None:
        out["text"] = ev.text
    if ev.urls:
        out["urls"] = ev.urls
    if ev.object_id is not None:
        out["object_id"] = ev.object_id
    if ev.hashtags:
        out["hashtags"] = ev.hashtags
    return orjson.dumps(out, option=orjson.OPT_SORT_KEYS)


def canonical_url(url: str) -> str:
    """``url`` with lower-case scheme and host, no fragment, no ``utm_*``/``fbclid``/``gclid``
    parameters and ``/`` for an empty path, so that tracking variants of one link count as one.
    Strings that are not absolute URLs (e.g. anonymised tokens) come back unchanged.

    A pure function of the string, so results are memoised (links repeat: 82 % of the URLs
    of the generator mix are repeats); a miss takes a string-method path for the common
    ``http(s)://host/path?query`` shape, exactly equal to the ``urllib`` one it stands in for
    (a property test checks it), and :func:`_canonical_url_urllib` for anything else.
    """
    if "://" not in url:
        return url
    out = _canonical_memo.get(url)
    if out is None:
        out = _canonical_url_fast(url)
        if len(_canonical_memo) >= _CANONICAL_MEMO_MAX:
            _canonical_memo.clear()
        _canonical_memo[url] = out
    return out


#: Memo of canonical_url (cleared when full: bounded memory, results do not depend on it).
_canonical_memo: dict[str, str] = {}
_CANONICAL_MEMO_MAX = 1 << 16


def _canonical_url_fast(url: str) -> str:
    """canonical_url without the memo: plain string methods for ``http(s)://`` URLs whose
    every step ``urlsplit`` would take is plain too (printable, no fragment, an ASCII host
    without brackets); ``urllib`` otherwise."""
    if url.startswith("https://"):
        start = 8
    elif url.startswith("http://"):
        start = 7
    else:
        return _canonical_url_urllib(url)
    # urlsplit removes tab/CR/LF and strips leading controls (isprintable excludes them),
    # checks bracketed (IPv6) hosts and non-ASCII hosts under NFKC: leave all that to it.
    if "#" in url or not url.isprintable():
        return _canonical_url_urllib(url)
    slash = url.find("/", start)
    if slash < 0:
        slash = len(url)
    end = url.find("?", start, slash)  # the host ends at the first '/' or '?'
    if end < 0:
        end = slash
    netloc = url[start:end]
    if not netloc or "[" in netloc or "]" in netloc or not netloc.isascii():
        return _canonical_url_urllib(url)
    path, _, query = url[end:].partition("?")
    if query:
        query = _strip_tracking(query)
    return url[:start] + netloc.lower() + (path or "/") + ("?" + query if query else "")


def _canonical_url_urllib(url: str) -> str:
    """The reference implementation of canonical_url (``urllib.parse``)."""
    if "://" not in url:
        return url
    try:
        p = urlsplit(url)
    except ValueError:
        return url
    query = "&".join(q for q in p.query.split("&") if q and not _is_tracking(q.split("=", 1)[0]))
    return urlunsplit((p.scheme.lower(), p.netloc.lower(), p.path or "/", query, ""))


def _strip_tracking(query: str) -> str:
    """``query`` (non-empty) without empty and tracking parameters, the others in order and
    untouched; the same as the filter of :func:`_canonical_url_urllib`."""
    lower = query.lower()
    # str.lower maps characters one by one, so a tracking key ("utm_...", "fbclid", "gclid",
    # in any case) leaves "utm_" or "clid" in the lower-cased query
    if "utm_" not in lower and "clid" not in lower and "&&" not in query and query[0] != "&" and query[-1] != "&":
        return query
    return "&".join(q for q in query.split("&") if q and not _is_tracking(q.split("=", 1)[0]))


def url_domain(url: str) -> str | None:
    """Lower-case host of an absolute URL without a leading ``www.``; None if there is none."""
    if "://" not in url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    return host[4:] if host.startswith("www.") else host


# --- internals -------------------------------------------------------------------------


def _too_large(raw: bytes, max_bytes: int) -> Rejection:
    return Rejection("too_large", f"{len(raw)} bytes > max_bytes {max_bytes}", raw)


def _not_object(obj: Any, raw: bytes, expected: str = "a JSON object", index: int | None = None) -> Rejection:
    return Rejection("not_object", f"expected {expected}, got {_json_type(obj)}", raw, index)


def _empty_envelope(raw: bytes) -> Rejection:
    return Rejection("empty_envelope", "the envelope array holds no events", raw)


def _undecodable(raw: bytes, error: orjson.JSONDecodeError) -> Rejection:
    """not_utf8 or not_json (orjson reports both as one error type)."""
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError as u:
        return Rejection("not_utf8", f"invalid UTF-8 at byte {u.start}", raw)
    return Rejection("not_json", str(error), raw)


def _one(obj: dict[str, Any], raw: bytes | None, limit: float = math.inf) -> Event | Rejection:
    """One decoded object; a rejection carries ``raw``, or ``obj`` re-serialised if None.

    With ``raw``, ``obj`` was decoded from it for this call and becomes the event's
    ``extra``; without (``parse_obj``), a copy does. ``limit``: the latest ``ts`` accepted."""
    try:
        ev = _event(obj if raw is not None else obj.copy())
        if ev.ts > limit:
            raise _future(ev.ts, limit)
    except _Bad as bad:
        return Rejection(bad.reason, bad.detail, _dump(obj) if raw is None else raw)
    if not ev.event_id:  # a _Derive
        return _with_id(ev, _derive_ids([ev.event_id.canonical])[0])  # type: ignore[attr-defined]
    return ev


def _envelope(objs: list[Any], raw: bytes, limit: float = math.inf) -> list[Event | Rejection]:
    """The elements of an envelope decoded from ``raw``; derived ids are hashed in one pass
    for all of them. Elements become their events' ``extra``, so the rejection of one
    re-serialises that element as decoded afresh from ``raw``."""
    out: list[Event | Rejection] = []
    derive: list[int] = []
    canonical: list[str] = []
    pristine: list[Any] | None = None
    for i, obj in enumerate(objs):
        if type(obj) is not dict:
            out.append(_not_object(obj, _dump(obj), index=i))
            continue
        try:
            ev = _event(obj)
            if ev.ts > limit:
                raise _future(ev.ts, limit)
        except _Bad as bad:
            if pristine is None:
                pristine = orjson.loads(raw)
            out.append(Rejection(bad.reason, bad.detail, _dump(pristine[i]), i))  # type: ignore[index]
            continue
        if not ev.event_id:  # a _Derive
            canonical.append(ev.event_id.canonical)  # type: ignore[attr-defined]
            derive.append(i)
        out.append(ev)
    if derive:
        for i, event_id in zip(derive, _derive_ids(canonical)):
            out[i] = _with_id(out[i], event_id)  # type: ignore[arg-type]
    return out


class _Derive:
    """Stands in for a missing ``event_id`` until the derived ids of a batch are hashed:
    falsy, and holds the derived-id input (the object without ``event_id`` as sorted-key
    JSON), or why it cannot be serialised (only a dict handed to parse_obj can hold
    non-JSON values, or JSON nested deeper than orjson.dumps allows)."""

    __slots__ = ("canonical", "error")

    def __init__(self, obj: dict[str, Any]) -> None:
        try:
            self.canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
            self.error: str | None = None
        except TypeError as e:
            self.canonical = ""
            self.error = f"cannot derive event_id: {e}"

    def __bool__(self) -> bool:
        return False


def _derive_ids(canonical: list[str]) -> list[str]:
    return [f"d:{h:016x}" for h in hash_strings(canonical).tolist()]


def _with_id(ev: Event, event_id: str) -> Event:
    """``ev._replace(event_id=event_id)`` without namedtuple's Python-level _make."""
    return _new_tuple(Event, (*ev[:3], event_id, *ev[4:]))  # type: ignore[no-any-return]


def _event(extra: dict[str, Any]) -> Event:
    """Validate and normalise one decoded object.

    Pops the contract's fields from ``extra`` (the decoded object itself when the caller
    owns it, else a copy); what is left becomes ``Event.extra``. Raises :class:`_Bad` on
    the first failure, checking fields in the order ts, account_id, action, event_id, url,
    urls, hashtags, text, object_id. A missing ``event_id`` comes back as a :class:`_Derive`
    for the caller to hash (a batch at a time).

    The hot path: one test for the usual ts/account_id/action (a float ``ts`` in range, a
    non-empty string ``account_id``, a common action) and one for a non-empty string
    ``event_id``, each falling back to the field-by-field checks; lists only when there are
    URLs or tags to collect.
    """
    return _event_with_id(extra, extra.pop("event_id", None))


def _event_with_id(extra: dict[str, Any], event_id: Any) -> Event:
    """:func:`_event` once ``event_id`` is popped from ``extra``."""
    pop = extra.pop
    derive = _Derive(extra) if event_id is None else None  # extra is still the object minus event_id
    return _fields(
        extra, derive, event_id, pop("ts", None), pop("account_id", None), pop("action", None),
        pop("text", None), pop("url", None), pop("object_id", None),
    )  # fmt: skip


def _fields(
    extra: dict[str, Any], derive: _Derive | None, event_id: Any, ts: Any, account_id: Any, action: Any,
    text: Any, url: Any, object_id: Any,
) -> Event:
    """:func:`_event` once these fields are popped from ``extra`` (``derive``: the
    :class:`_Derive` of a missing ``event_id``, made before any other field was popped).

    :func:`parse_messages` inlines this for the usual event: a float ``ts`` in range, a
    non-empty string ``account_id`` and ``event_id``, a common action, ``text``, ``url``
    and ``object_id`` absent or strings, no ``urls`` or ``hashtags`` field. Keep the two
    in step (``test_parse_messages_equals_parse_message_one_by_one`` compares them).
    """
    pop = extra.pop
    urls = pop("urls", None)
    hashtags = pop("hashtags", None)

    if not (
        type(ts) is float
        and 0.0 <= ts <= MAX_TS  # also false for NaN
        and type(account_id) is str
        and account_id
        and type(action) is str
        and action in _COMMON_ACTIONS
    ):
        ts, account_id, action = _required(ts, account_id, action)
    if type(event_id) is not str or not event_id:
        event_id = _event_id(event_id, derive)

    found: list[str] | None = None
    if url is not None:
        if type(url) is str:
            found = [url] if url else None
        else:
            found = _strings("url", url)
    if urls is not None:
        more = _strings("urls", urls)
        found = more if found is None else found + more
    tags: list[str] | None = None
    if hashtags is not None:
        if type(hashtags) is not list or any(type(h) is not str for h in hashtags):
            raise _Bad("bad_type:hashtags", "hashtags must be a list of strings")
        tags = [tag for h in hashtags if (tag := h.lstrip("#").casefold())]
    if text is not None:
        if type(text) is not str:
            raise _Bad("bad_type:text", f"text must be a string, got {_json_type(text)}")
        if "://" in text:
            more = (_URL_ANYCASE_RE if "Http" in text or "HTTP" in text else _URL_RE).findall(text)
            found = more if found is None else found + more
        if "#" in text:
            more = list(map(str.casefold, _TAG_RE.findall(text)))
            tags = more if tags is None else tags + more

    if type(object_id) is str:
        object_id = object_id or None
    elif type(object_id) is int:
        object_id = str(object_id)
    elif object_id is not None:
        raise _Bad("bad_type:object_id", f"object_id must be a string or an integer, got {_json_type(object_id)}")

    if derive is not None and derive.error is not None:  # after every validation failure
        raise _Bad("not_json", derive.error)
    return _make(ts, account_id, action, event_id, text, found, object_id, tags, extra)


def _make(
    ts: float, account_id: str, action: str, event_id: str, text: str | None, found: list[str] | None,
    object_id: str | None, tags: list[str] | None, extra: dict[str, Any],
) -> Event:
    """The normalised event of checked fields: URLs canonical and de-duplicated, tags de-duplicated."""
    return _new_tuple(  # type: ignore[no-any-return]
        Event,
        (
            ts,
            account_id,
            action,
            event_id,
            text,
            ()
            if not found
            else (canonical_url(found[0]),)
            if len(found) == 1
            else tuple(dict.fromkeys(map(canonical_url, found))),
            object_id,
            () if not tags else (tags[0],) if len(tags) == 1 else tuple(dict.fromkeys(tags)),
            extra or {},  # a fresh small dict rather than the emptied decoded one
        ),
    )


def _required(ts: Any, account_id: Any, action: Any) -> tuple[float, str, str]:
    """ts, account_id and action checked one by one (in that order) and normalised."""
    t = type(ts)
    if t is float or t is int:
        if not 0 <= ts <= MAX_TS:  # also false for NaN
            raise _Bad("bad_ts", _ts_range_detail(ts))
        ts = float(ts)
    elif t is str:
        ts = _iso_ts(ts)
    else:
        _absent_or_bad_type("ts", ts, "unix seconds (number) or an ISO-8601 string with zone")

    t = type(account_id)
    if t is int:
        account_id = str(account_id)
    elif t is not str:
        _absent_or_bad_type("account_id", account_id, "a string (or an integer)")
    elif not account_id:
        raise _Bad("bad_value:account_id", "account_id is empty")

    if type(action) is not str:
        _absent_or_bad_type("action", action, "a lower-case word")
    if action not in _COMMON_ACTIONS and not _ACTION_RE.fullmatch(action):
        raise _Bad("bad_value:action", f"action {_short(action)} is not a lower-case word [a-z][a-z_]*")
    return ts, account_id, action


def _event_id(event_id: Any, derive: _Derive | None) -> Any:
    """An event_id that is not a non-empty string: an integer's digits, the _Derive of a
    missing one, or a rejection."""
    if event_id is None:
        return derive
    if type(event_id) is int:
        return str(event_id)
    if type(event_id) is str:
        raise _Bad("bad_value:event_id", "event_id is empty (omit it to have one derived)")
    raise _Bad("bad_type:event_id", f"event_id must be a string or an integer, got {_json_type(event_id)}")


def _absent_or_bad_type(field: str, value: Any, expected: str) -> NoReturn:
    """Raise missing_field (absent or null) or bad_type for a required field."""
    if value is None:
        raise _Bad(f"missing_field:{field}", f"{field} is required")
    raise _Bad(f"bad_type:{field}", f"{field} must be {expected}, got {_json_type(value)}")


def _strings(field: str, value: Any) -> list[str]:
    """A string or a list of strings as a list, empty strings dropped."""
    if type(value) is str:
        return [value] if value else []
    if type(value) is list and all(type(v) is str for v in value):
        return [v for v in value if v]
    raise _Bad(f"bad_type:{field}", f"{field} must be a string or a list of strings")


def _iso_ts(s: str) -> float:
    try:
        dt = datetime.fromisoformat(s)
        if dt.tzinfo is None:
            raise _Bad("bad_ts", f"ts {_short(s)} has no zone (add 'Z' or an offset such as '+02:00')")
        ts = dt.timestamp()
    except (ValueError, OverflowError):
        raise _Bad("bad_ts", f"ts {_short(s)} is not an ISO-8601 date-time") from None
    if not 0 <= ts <= MAX_TS:
        raise _Bad("bad_ts", _ts_range_detail(ts))
    return ts


def _future(ts: float, limit: float) -> _Bad:
    def utc(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    return _Bad("future_ts", f"ts {_short(ts)} ({utc(ts)}) is after {utc(limit)}, events.max_ahead_s after its "
                "message was received (the Kafka record's timestamp; in a replay, its start): a clock ahead, "
                "which would make the on-time events after it in its partition late")


def _ts_range_detail(ts: float) -> str:
    hint = " (milliseconds? ts is in seconds)" if MAX_TS * 10 < ts < MAX_TS * 10_000 else ""
    return f"ts {_short(ts)} is not a time in [0, {MAX_TS:.0f}] (1970..2100){hint}"


def _is_tracking(key: str) -> bool:
    key = key.lower()
    return key.startswith("utm_") or key in _TRACKING_PARAMS


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _dump(obj: Any) -> bytes:
    """Best-effort JSON of a rejected value (non-JSON values from parse_obj give b"")."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return b""

"""The ``sessionwatch`` command line."""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from detector.policy import Policy, PolicyError
from detector.stream.settings import (
    DELIVERY_TIMEOUT_S,
    BrokerUnreachable,
    ClusterRefuses,
    NoSuchTopic,
    NotDelivered,
    TopicMismatch,
)

if TYPE_CHECKING:
    from detector.engine import Engine
    from detector.fingerprint import Fingerprinter
    from detector.stream.settings import StreamSettings

log = logging.getLogger("sessionwatch")

#: ``--format`` choices (detector.adapters.FORMATS, without importing the adapters).
INPUT_FORMATS = (
    "spec",
    "okta",
    "ocsf",
    "servicenow",
    "servicenow-transactions",
    "servicenow-events",
)

DEFAULT_DEAD_LETTERS = "sessionwatch-dead-letters.jsonl"


def _open_out(stack: ExitStack, path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdout.buffer
    return stack.enter_context(open(path, "wb"))


class _LazyFile:
    """Creates the file on first write, so a clean run leaves no empty dead-letter file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None

    def write(self, data: bytes | bytearray, /) -> int:
        if self._fh is None:
            self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        return self._fh.write(data)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def load_policy(path: str | None) -> Policy:
    """Loads the config or exits with the list of problems (exit code 2)."""
    try:
        return Policy.load(path)
    except PolicyError as err:
        print(f"sessionwatch: {err}", file=sys.stderr)
        raise SystemExit(2) from err


@contextmanager
def _model_refused() -> Iterator[None]:
    """Exit 2 with the reason when the engine's behaviour model file cannot be used."""
    from detector.anomaly.base import ModelError

    try:
        yield
    except ModelError as err:
        print(f"sessionwatch: [behaviour] model refused: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def build_engine(policy: Policy, fingerprint: Fingerprinter | None = None) -> Engine:
    """The engine for a config, or exit 2 if its behaviour model cannot be used."""
    from detector.engine import Engine
    from detector.fingerprint import Fingerprinter

    fingerprint = fingerprint or Fingerprinter.from_env(policy.fingerprint_key_env)
    with _model_refused():
        return Engine(policy, fingerprint)


def cmd_replay(args: argparse.Namespace) -> int:
    from detector.replay import BinaryOut, JsonLinesWriter, Replayer
    from detector.report import print_summary, progress_reporter

    policy = load_policy(args.config)
    engine = build_engine(policy)
    with ExitStack() as stack:
        alerts_out = _open_out(stack, args.alerts_out)
        dlq_path = args.dead_letter_out or DEFAULT_DEAD_LETTERS
        dlq_out: BinaryOut
        if args.dead_letter_out:
            dlq_out = _open_out(stack, dlq_path)
        else:
            lazy = _LazyFile(dlq_path)
            stack.callback(lazy.close)
            dlq_out = lazy
        alerts = JsonLinesWriter(alerts_out)
        dead = JsonLinesWriter(dlq_out)
        on_alert: Any = alerts
        if args.alerts_format == "ocsf":
            from detector.adapters.ocsf_out import finding

            def on_alert(alert: Any) -> None:
                alerts(finding(alert))

        replayer = Replayer(engine, on_alert, dead)
        frame = None
        if args.format not in ("spec", "servicenow"):
            from detector.adapters import ADAPTERS
            from detector.adapters.framing import records, to_spec_lines

            convert: Any = ADAPTERS[args.format]
            unmapped = replayer.summary.unmapped
            if args.source_timezone and args.format.startswith("servicenow"):
                convert = functools.partial(convert, tz=_timezone(args.source_timezone))

            def frame(fh: Any) -> Any:
                return to_spec_lines(records(fh), convert, unmapped)

        if args.metrics_port is not None:
            _serve_metrics(replayer, args.metrics_host, args.metrics_port)
        if args.format == "servicenow":
            summary = _replay_servicenow(replayer, args)
        else:
            with progress_reporter(args.inputs, enabled=not args.quiet) as progress:
                summary = replayer.run(args.inputs, progress, frame)
        alerts.flush()
        dead.flush()
    if args.metrics_port is not None and args.metrics_linger > 0:
        time.sleep(args.metrics_linger)  # one more scrape sees the final counts
    if not args.quiet:
        print_summary(summary, dead_letters=dlq_path if dead.count else None)
    return _damaged(summary.damaged, "replayed")


def _damaged(damaged: list[str], done: str) -> int:
    """Exit code 1 and each unreadable input's reason, after everything readable was used."""
    for reason in damaged:
        print(
            f"sessionwatch: input unreadable from some point on ({reason}); "
            f"the records before it were {done}",
            file=sys.stderr,
        )
    return 1 if damaged else 0


def _replay_servicenow(replayer: Any, args: argparse.Namespace) -> Any:
    """Any mix of syslog_transaction, sysevent and sys_user exports, merged by time."""
    import time as clock

    import orjson

    from detector.adapters.framing import records
    from detector.adapters.servicenow import merged
    from detector.replay import open_input, until_unreadable

    exports: list[list[Any]] = []
    refused: list[bytes] = []
    for path in args.inputs:
        rows = []
        with open_input(path) as fh:
            for raw in until_unreadable(records(fh), path, replayer.summary.damaged):
                try:
                    row = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    refused.append(raw)  # dead-lettered as not_json
                    continue
                if isinstance(row, dict):
                    rows.append(row)
                else:
                    refused.append(raw)
        exports.append(rows)
    tz = _timezone(args.source_timezone) if args.source_timezone else datetime.UTC
    events, unmapped = merged(exports, tz)
    replayer.summary.unmapped.update(unmapped)
    start = clock.perf_counter()
    replayer.feed([*refused, *map(orjson.dumps, events)], "servicenow (merged)")
    replayer.summary.seconds += clock.perf_counter() - start
    return replayer.summary


def _timezone(name: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        print(f"sessionwatch: unknown time zone {name!r} (use an IANA name)", file=sys.stderr)
        raise SystemExit(2) from err


def _serve_metrics(replayer: Any, host: str, port: int) -> None:
    from detector.metrics import serve

    try:
        serve(replayer.metrics, port, host)
    except OSError as err:
        print(f"sessionwatch: cannot serve metrics on {host}:{port}: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    log.info("metrics on http://%s:%d/metrics", host, port)


@contextmanager
def _whole(path: str) -> Iterator[None]:
    """For commands that need an input whole (evaluate, import-policy): exit 2 if it
    cannot be read to its end, rather than a traceback or a result from part of it."""
    from detector.replay import READ_ERRORS

    try:
        yield
    except READ_ERRORS as err:
        print(f"sessionwatch: cannot read {path} to its end: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def cmd_import_policy(args: argparse.Namespace) -> int:
    import orjson

    from detector.adapters.framing import records
    from detector.adapters.servicenow import policy_from_properties, policy_keys
    from detector.replay import open_input

    with _whole(args.input), open_input(args.input) as fh:
        rows = [r for r in map(orjson.loads, records(fh)) if isinstance(r, dict)]
    section = policy_from_properties(rows)
    try:
        policy = Policy.from_mapping({"policy": section})
    except PolicyError as err:
        print(f"sessionwatch: {args.input}: {err}", file=sys.stderr)
        return 2
    lines = [
        f"# [policy] imported from the ServiceNow sys_properties export {args.input}",
        "# by `sessionwatch import-policy`. Absent properties keep ServiceNow's defaults.",
        "[policy]",
    ]
    for name in policy_keys():
        if name in section:
            lines.append(f'"{name}" = {section[name]!r}')
        else:
            lines.append(f'# "{name}" not in the export: ServiceNow default')
    text = "\n".join(lines) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as out:
            out.write(text)
    for warning in policy.warnings:
        print(f"sessionwatch: warning: {warning}", file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from detector.simulate import Simulation

    policy = load_policy(args.config) if args.config else None  # None: the bundled sim policy
    try:
        sim = Simulation(
            policy,
            users=args.users,
            hours=args.hours,
            seed=args.seed,
            behaviour_attacks=args.behaviour_attacks,
        )
    except ValueError as err:
        print(f"sessionwatch: {err}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        out = _open_out(stack, args.output)
        labels = stack.enter_context(open(args.labels_out, "wb")) if args.labels_out else None
        stats = sim.write(out, labels)
    print(
        f"sessionwatch: wrote {stats.events} events, {stats.attacks} labelled attacks",
        file=sys.stderr,
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from detector.anomaly.training import train

    policy = load_policy(args.config)
    try:
        model = train(args.inputs, policy, seed=args.seed, target_fpr=args.target_fpr)
    except ValueError as err:
        print(f"sessionwatch: cannot train: {err}", file=sys.stderr)
        return 2
    digest = model.save(args.output)
    meta = model.meta
    print(
        f"sessionwatch: trained on {meta['rows']} steps of {meta['sessions']} sessions "
        f"in {meta['seconds']} s; threshold {model.threshold}; wrote {args.output} "
        f"(sha256 {digest})",
        file=sys.stderr,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import orjson

    from detector.evaluate import replay_and_evaluate
    from detector.fingerprint import Fingerprinter
    from detector.replay import open_input

    policy = load_policy(args.config)
    engine = build_engine(policy, Fingerprinter(b"sessionwatch-evaluate"))
    with _whole(args.events), open_input(args.events) as fh:
        lines = fh.read().splitlines()
    labels: list[dict[str, Any]] = []
    with _whole(args.labels), open_input(args.labels) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                label = orjson.loads(line)
            except orjson.JSONDecodeError:
                label = None
            if not (
                isinstance(label, dict)
                and isinstance(label.get("event_id"), str)
                and isinstance(label.get("indicator"), str)
            ):
                print(
                    f"sessionwatch: {args.labels}:{number} is not a label: need a JSON object "
                    'with string "event_id" and "indicator" (as `simulate --labels-out` writes)',
                    file=sys.stderr,
                )
                return 2
            labels.append(label)
    report = replay_and_evaluate(engine, lines, labels)
    if args.json:
        out = {
            "sessions": report.sessions,
            "benign_sessions": report.benign,
            "indicators": [
                {**vars(q), "precision": q.precision, "recall": q.recall} for q in report.indicators
            ],
            "models": [
                {**vars(q), "precision": q.precision, "recall": q.recall} for q in report.models
            ],
        }
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
        return 0

    def fmt(x: float | None) -> str:
        return "    -" if x is None else f"{x:5.3f}"

    print(f"{report.sessions} authenticated sessions, {report.benign} with no label")
    print(f"{'indicator':<26} {'tp':>5} {'fn':>5} {'fp':>5} {'prec':>6} {'recall':>6} {'auc':>6}")
    for q in report.indicators:
        print(
            f"{q.name:<26} {q.tp:>5} {q.fn:>5} {q.fp:>5} {fmt(q.precision):>6} "
            f"{fmt(q.recall):>6} {fmt(q.auc):>6}"
        )
    for q in report.models:
        print(
            f"model {q.name}: ROC AUC {fmt(q.auc)}; at threshold {q.threshold}: recall "
            f"{fmt(q.recall)} ({q.tp}/{q.tp + q.fn} attacks), false positives {q.fp} "
            f"of {report.benign} benign sessions ({100 * (q.fpr or 0):.3f}%)"
        )
        for attack, (found, total) in q.by_attack.items():
            print(f"  {attack}: {found}/{total}")
    if not report.models:
        print("no behaviour model configured ([behaviour] model): rules only")
    return 0


def _stream_settings(args: argparse.Namespace) -> StreamSettings:
    from detector.stream.settings import InvalidSetting, StreamSettings

    try:
        settings = StreamSettings()
    except InvalidSetting as err:
        problems = [str(err)]
    else:
        for name in ("bootstrap_servers", "partitions", "app_id", "store", "data_dir", "web_port"):
            value = getattr(args, name, None)
            if value is not None:
                setattr(settings, name, value)
        problems = settings.validate()
    if problems:
        print("sessionwatch: invalid streaming settings:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        raise SystemExit(2)
    return settings


def cmd_worker(args: argparse.Namespace) -> int:

    from faust.worker import Worker

    from detector.stream.app import create_app
    from detector.stream.clients import faust_topics, prepare_worker, run_with_broker

    policy = load_policy(args.config)
    settings = _stream_settings(args)
    _usable_data_dir(settings.data_dir)
    with _model_refused():  # loads the model: refused before any broker is contacted
        app = create_app(settings, policy)
    # Source and sink topics with explicit partition counts, before Faust subscribes; also
    # where an unreachable broker or refused credentials stop the worker, with a reason.
    run_with_broker(settings, prepare_worker(settings, faust_topics(app)))
    worker = _bounded_stop(Worker)(app, loglevel="warning" if args.quiet else "info", quiet=True)
    # Faust's terminal spinner lowers the root logger to DEBUG to spin on every record:
    # every aiokafka debug message would then be built, a large cost per event.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


#: Seconds a worker told to stop (SIGTERM, SIGINT) takes at most: under the 30 s a
#: Kubernetes pod is given before SIGKILL, so the reason is logged first.
STOP_WITHIN_S = 25.0


def _bounded_stop(worker_class: type[Any]) -> type[Any]:
    """``worker_class`` whose stop on a signal ends within :data:`STOP_WITHIN_S`.

    A clean stop writes the state changed since the last checkpoint, waits for the
    broker to confirm it, then commits. With the broker away, the Kafka client holds
    those writes for up to 20 minutes (Faust's producer timeout) and the stop with them.
    Past the bound the process exits at once with code 1, as ``kill -9`` would: nothing
    unconfirmed was committed, so the next start reads those events again (tested)."""

    class BoundedStop(worker_class):  # type: ignore[misc]
        def _schedule_shutdown(self, signum: Any) -> None:
            if not self._signal_stop_time:
                watchdog = threading.Timer(STOP_WITHIN_S, _stop_now)
                watchdog.daemon = True
                watchdog.start()
            super()._schedule_shutdown(signum)

    return BoundedStop


def _stop_now() -> None:
    os.write(
        2,
        f"sessionwatch: the worker did not stop within {STOP_WITHIN_S:g} s of the signal "
        "(is the broker away?); exiting without committing what it could not confirm: "
        "the next start reads those events again\n".encode(),
    )
    os._exit(1)


def _usable_data_dir(path: str) -> None:
    """Exit 2 naming the setting when the worker could not keep its tables in ``path``:
    Faust would find out only after joining the group, with a traceback."""
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        print(
            f"sessionwatch: the data directory {path!r} cannot be used "
            f"({err.strerror or err}): set --data-dir or SESSIONWATCH_DATA_DIR to a "
            "directory the worker can write",
            file=sys.stderr,
        )
        raise SystemExit(2) from err


def cmd_produce(args: argparse.Namespace) -> int:

    from detector.events import MAX_LINE_BYTES
    from detector.fingerprint import Fingerprinter
    from detector.stream.clients import produce, run_with_broker

    policy = load_policy(args.config)
    fp = Fingerprinter.from_env(policy.fingerprint_key_env)
    settings = _stream_settings(args)
    damaged: list[str] = []
    refused: list[str] = []
    sent = run_with_broker(
        settings,
        produce(
            settings,
            args.inputs,
            fp,
            speed=args.speed,
            rate=args.rate,
            damaged=damaged,
            refused=refused,
            delivery_timeout=args.delivery_timeout,
        ),
    )
    print(f"sessionwatch: produced {sent} events", file=sys.stderr)
    if refused:
        print(
            f"sessionwatch: {len(refused)} line(s) over {MAX_LINE_BYTES} bytes, never an "
            f"event, sent to {settings.dlq_topic} instead (the first: {refused[0]})",
            file=sys.stderr,
        )
    return _damaged(damaged, "sent")


def cmd_alerts(args: argparse.Namespace) -> int:

    from detector.stream.clients import read_alerts, run_with_broker

    settings = _stream_settings(args)
    run_with_broker(settings, read_alerts(settings, sys.stdout.buffer, follow=args.follow))
    return 0


def _kafka_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-servers", help="default: $SESSIONWATCH_BOOTSTRAP_SERVERS")
    p.add_argument("--partitions", type=int, help="partitions of new topics (default 8)")
    p.add_argument("--config", help="policy TOML")


def _input_path(path: str) -> str:
    """A recorded log that can be opened (``-`` is stdin), checked before any work starts:
    ``produce`` must not send half of its files and then stop at a typo in the last."""
    # Looked at, not opened: opening and closing a named pipe here would cost its writer.
    if path == "-":
        return path
    if not os.path.exists(path):
        problem = "No such file or directory"
    elif os.path.isdir(path):
        problem = "Is a directory"
    elif not os.access(path, os.R_OK):
        problem = "Permission denied"
    else:
        return path
    raise argparse.ArgumentTypeError(f"cannot read {path}: {problem}")


def _output_path(path: str) -> str:
    """An output that can be created (``-`` is stdout), checked before any work: a typo in
    a directory must not end a run in a traceback, or only once its first alert is due."""
    if path != "-":
        target = Path(path)
        if target.is_dir():
            raise argparse.ArgumentTypeError(f"cannot write {path}: it is a directory")
        if not target.parent.is_dir():
            raise argparse.ArgumentTypeError(f"cannot write {path}: no directory {target.parent}")
        if not os.access(target.parent, os.W_OK):
            raise argparse.ArgumentTypeError(
                f"cannot write {path}: directory {target.parent} is not writable"
            )
    return path


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)")
    return port


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (0 < number < math.inf):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionwatch",
        description="Detect hijacked, replayed and policy-violating web sessions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    rp = sub.add_parser("replay", help="run the detector over recorded JSON Lines logs")
    rp.add_argument(
        "inputs", nargs="+", metavar="INPUT", type=_input_path, help="JSON Lines file, .gz, or -"
    )
    rp.add_argument("--config", help="policy TOML (default: ServiceNow's defaults)")
    rp.add_argument(
        "--alerts-out", default="-", type=_output_path, help="alert JSON Lines (default: stdout)"
    )
    rp.add_argument(
        "--dead-letter-out",
        type=_output_path,
        help=f"refused records (default: {DEFAULT_DEAD_LETTERS}, created only if needed)",
    )
    rp.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    rp.add_argument(
        "--format",
        choices=INPUT_FORMATS,
        default="spec",
        help="input format: SPEC.md events (default) or a vendor log (see README: Formats)",
    )
    rp.add_argument(
        "--source-timezone",
        metavar="TZ",
        help="IANA zone of ServiceNow's zone-less times (default UTC), e.g. Europe/Berlin",
    )
    rp.add_argument(
        "--alerts-format",
        choices=("spec", "ocsf"),
        default="spec",
        help="alert output: SPEC.md alerts (default) or OCSF Detection Findings",
    )
    rp.add_argument(
        "--metrics-port", type=_port, help="serve Prometheus /metrics on this port while replaying"
    )
    rp.add_argument("--metrics-host", default="127.0.0.1", help="metrics bind address")
    rp.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep serving metrics this long after the replay (for a last scrape)",
    )
    rp.set_defaults(func=cmd_replay)

    ip = sub.add_parser(
        "import-policy", help="write a policy TOML from a ServiceNow sys_properties export"
    )
    ip.add_argument(
        "input", metavar="EXPORT", type=_input_path, help="sys_properties as Table API JSON or CSV"
    )
    ip.add_argument(
        "-o", "--output", default="-", type=_output_path, help="policy TOML (default: stdout)"
    )
    ip.set_defaults(func=cmd_import_policy)

    sp = sub.add_parser("simulate", help="generate realistic traffic with labelled attacks")
    sp.add_argument("--users", type=int, default=50)
    sp.add_argument("--hours", type=float, default=24.0)
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--config", help="policy the attacks are built against (default: bundled)")
    sp.add_argument(
        "-o", "--output", default="-", type=_output_path, help="events JSON Lines (default: stdout)"
    )
    sp.add_argument(
        "--labels-out", type=_output_path, help="labels JSON Lines: one line per expected alert"
    )
    sp.add_argument(
        "--behaviour-attacks",
        type=int,
        default=0,
        metavar="N",
        help="N of each behavioural attack (bulk export, off-hours, enumeration); needs "
        "--hours 96 or more",
    )
    sp.set_defaults(func=cmd_simulate)

    tp = sub.add_parser("train", help="train the offline behaviour model on recorded logs")
    tp.add_argument("inputs", nargs="+", metavar="RECORDED_LOG", type=_input_path)
    tp.add_argument(
        "-o", "--output", required=True, type=_output_path, help="model file to write (.skops)"
    )
    tp.add_argument("--config", help="policy TOML (timeouts, [behaviour] min_user_sessions)")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument(
        "--target-fpr",
        type=float,
        default=0.0005,
        help="share of training sessions allowed above the threshold (default 0.0005)",
    )
    tp.set_defaults(func=cmd_train)

    ep = sub.add_parser("evaluate", help="precision, recall, ROC AUC against simulator labels")
    ep.add_argument("events", metavar="EVENTS", type=_input_path)
    ep.add_argument("labels", metavar="LABELS", type=_input_path)
    ep.add_argument("--config", help="policy TOML, with the [behaviour] model to evaluate")
    ep.add_argument("--json", action="store_true", help="machine-readable output")
    ep.set_defaults(func=cmd_evaluate)

    wp = sub.add_parser("worker", help="run the streaming detector (a Faust worker)")
    _kafka_options(wp)
    wp.add_argument("--app-id", help="consumer group / app id (default sessionwatch)")
    wp.add_argument("--store", help="rocksdb:// (default) or memory://")
    wp.add_argument("--data-dir", help="local table storage (default ./sessionwatch-data)")
    wp.add_argument("--web-port", type=_port, help="web server port (default 6066)")
    wp.add_argument("-q", "--quiet", action="store_true")
    wp.set_defaults(func=cmd_worker)

    pp = sub.add_parser("produce", help="send recorded events to session-events")
    _kafka_options(pp)
    pp.add_argument("inputs", nargs="+", metavar="FILE", type=_input_path)
    speed = pp.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=_positive, help="replay recorded time, scaled by X")
    speed.add_argument("--rate", type=_positive, help="send N events per second")
    pp.add_argument(
        "--delivery-timeout",
        type=_positive,
        default=DELIVERY_TIMEOUT_S,
        metavar="S",
        help=f"seconds to keep an event the broker does not take yet "
        f"(default {DELIVERY_TIMEOUT_S:g})",
    )
    pp.set_defaults(func=cmd_produce)

    ap = sub.add_parser("alerts", help="print session-alerts")
    _kafka_options(ap)
    ap.add_argument("--follow", action="store_true", help="keep waiting for new alerts")
    ap.set_defaults(func=cmd_alerts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `sessionwatch replay ... | head` is normal use, not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except (BrokerUnreachable, NoSuchTopic, NotDelivered) as exc:
        print(f"sessionwatch: {exc}", file=sys.stderr)
        return 1
    except (TopicMismatch, ClusterRefuses) as exc:  # a configuration error, like a bad setting
        print(f"sessionwatch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""`semops up` and `semops demo`: a whole network on this machine."""

from __future__ import annotations

import contextlib
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from semops.cli.common import err, fail, out
from semops.devnet.demo import (
    BOOKS,
    CAFE,
    DEMO_PIN,
    Population,
    StoryStep,
    load_population,
    merchant_backend,
    merchant_token_file,
    pay_story,
    populate,
)
from semops.devnet.network import Layout, Network, new_layout
from semops.service.files import private_dir

if TYPE_CHECKING:
    from semops.devnet.bench import BenchReport, BenchSettings

DataDirOption = Annotated[
    Path, typer.Option("--data-dir", help="Folder for every actor's keys, databases and logs.")
]


def _network(data_dir: Path, *, fixed_ports: bool) -> Network:
    private_dir(data_dir)
    if (data_dir / "network.json").exists():
        layout = Layout.load(data_dir)
    else:
        layout = new_layout(data_dir, fixed_ports=fixed_ports, db_urls=None)
    return Network(layout)


def _stop(network: Network) -> None:
    """Stop every process, even if Ctrl-C (or SIGTERM) comes again meanwhile: the services
    run in their own sessions, so an interrupted stop would leave them running unseen."""
    previous = {
        number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        network.stop()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _start(network: Network) -> Population:
    out.print(f"Starting the router, bank-a and mno-b in {escape(str(network.data_dir))} …")
    network.start()
    population = load_population(network) or populate(network)
    backend = merchant_backend(network, CAFE[0], CAFE[1])
    network.processes[backend.name] = backend
    backend.start()
    backend.wait_ready()
    return population


def _print_urls(network: Network, population: Population) -> None:
    layout = network.layout
    merchant_url = f"http://127.0.0.1:{layout.ports['merchant']}"
    operator = f"http://127.0.0.1:{layout.ports['router-operator']}"
    out.print("\n[bold green]SEMOPS is up.[/bold green] Each actor is its own process:\n")
    out.print(f"  router (mTLS)       {layout.router_url()}   operator {operator}")
    for processor_id in ("bank-a", "mno-b"):
        scheme_port = layout.ports[processor_id + "-scheme"]
        operator_port = layout.ports[processor_id + "-operator"]
        url = layout.processor_url(processor_id)
        out.print(
            f"  {processor_id:<19} {url}   (scheme port {scheme_port}, mTLS;"
            f" metrics on operator port {operator_port})"
        )
    out.print(f"  merchant backend    {merchant_url}   ({CAFE[2]} at {CAFE[1]})")
    out.print("\nDemo customers (PIN [bold]" + DEMO_PIN + "[/bold]):")
    for key, customer in population.customers.items():
        where = f"{customer.name} at {customer.processor_id}"
        out.print(f"  {key:<6} {where}, wallet {customer.wallet_dir}")
    qr_dir = network.data_dir / "qr"
    alice_wallet = population.customers["alice"].wallet_dir
    token_file = merchant_token_file(network, CAFE[0])
    out.print("\nTry a payment (copy and paste):")
    out.print(
        "  .venv/bin/semops merchant request --amount 12.50 --currency EUR --reference TABLE-7"
        f" \\\n      --merchant-url {merchant_url} --api-token-file {token_file}"
        f" --out-dir {qr_dir}"
    )
    out.print(f"  .venv/bin/semops wallet pay {qr_dir}/<order id>.png --wallet-dir {alice_wallet}")
    out.print(f"  .venv/bin/semops wallet balance --wallet-dir {alice_wallet}")
    out.print("\nPages (open in a browser):")
    out.print(f"  shop: new order     {merchant_url}/shop/new   (orders and refunds: /shop/orders)")
    out.print(f"                      sign in with the API token in {token_file}")
    out.print(f"  checkout            {merchant_url}/checkout/<order id>   (public)")
    for processor_id in ("bank-a", "mno-b"):
        url = layout.processor_url(processor_id)
        token = network.data_dir / processor_id / "operator.token"
        out.print(f"  {processor_id + ' web wallet':<19} {url}/wallet/")
        out.print(f"  {processor_id + ' back office':<19} {url}/backoffice/   (token in {token})")
    out.print("\nStop with Ctrl-C.")


def up(
    data_dir: DataDirOption = Path("data"),
) -> None:
    """Run the router, a bank, an MNO and a merchant backend with demo customers."""
    network = _network(data_dir, fixed_ports=True)
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        population = _start(network)
        _print_urls(network, population)
        while not stop:
            for process in network.processes.values():
                if not process.alive():
                    err.print(f"[red]{process.name} stopped:[/red]\n{escape(process.tail(10))}")
                    stop = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:
        fail(str(error))
    finally:
        signal.signal(signal.SIGTERM, previous)
        out.print("Stopping …")
        _stop(network)


def demo(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep every actor's data here for inspection.")
    ] = None,
) -> None:
    """Run the whole story end to end and print what each actor saw."""
    scratch = None
    if data_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="semops-demo-")
        data_dir = Path(scratch.name)
    network = _network(data_dir, fixed_ports=False)
    try:
        population = _start(network)
        alice, bob = population.customers["alice"], population.customers["bob"]
        cafe, books = population.merchants["cafe"], population.merchants["books"]
        steps = [
            pay_story(network, f"bank -> MNO: {alice.name} pays {CAFE[2]}", alice, cafe, 1250),
            pay_story(network, f"MNO -> bank: {bob.name} pays {BOOKS[2]}", bob, books, 2490),
            pay_story(
                network, f"on-us: {alice.name} pays {BOOKS[2]} at her own bank", alice, books, 990
            ),
        ]
        positions = network.router_admin("GET", "/v1/admin/positions")["positions"]
    except RuntimeError as error:
        fail(str(error))
    finally:
        _stop(network)
    _print_story(steps, positions)
    if scratch is None:
        out.print(f"\nEvery actor's data is kept in {escape(str(data_dir))}")
    else:
        scratch.cleanup()
    if not all(step.ok for step in steps):
        raise typer.Exit(1)


def _print_story(steps: list[StoryStep], positions: list[dict[str, object]]) -> None:
    for step in steps:
        mark = "[green]ok[/green]" if step.ok else "[red]FAILED[/red]"
        out.print(f"\n[bold]{escape(step.title)}[/bold]  {mark}")
        for actor, lines in step.seen.items():
            for line in lines:
                out.print(f"  {actor:<24} {escape(line)}")
    out.print("\n[bold]router[/bold] net positions (what each processor owes or is owed):")
    for row in positions:
        out.print(
            f"  {row['participant_id']:<24} {row['net_minor']:>8} minor units {row['currency']}"
        )


ProfileFormatOption = Annotated[
    str,
    typer.Option(
        "--profile-format",
        help="py-spy's output format: speedscope, flamegraph (SVG), raw or chrometrace.",
    ),
]


def bench(
    payments: Annotated[int, typer.Option("--payments", min=1, max=100_000)] = 500,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256)] = 16,
    on_us: Annotated[
        bool, typer.Option("--on-us", help="Payer and payee at one processor.")
    ] = False,
    with_merchant: Annotated[
        bool,
        typer.Option(
            "--with-merchant",
            help="Run the shop's merchant backend too: orders through it, notices to it.",
        ),
    ] = False,
    postgres: Annotated[
        str | None,
        typer.Option("--postgres", help="Run on this PostgreSQL server instead of SQLite."),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", help="py-spy each service in the pay phase: a file each here."),
    ] = None,
    profile_format: ProfileFormatOption = "speedscope",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep the network's data here.")
    ] = None,
) -> None:
    """Drive payments through a live network; the last lines have payments/s, latencies and
    what one payment cost each process (CPU, SQL statements, writes, commits)."""
    from semops.cli.common import EXIT_BAD_INPUT
    from semops.devnet.bench import BenchSettings
    from semops.devnet.profile import SUFFIXES, ProfilerMissing, find_py_spy

    if profile_format not in SUFFIXES:
        fail(f"--profile-format: one of {', '.join(SUFFIXES)}", EXIT_BAD_INPUT)
    py_spy = None
    if profile is not None:
        try:
            py_spy = find_py_spy()
            profile.mkdir(parents=True, exist_ok=True)
        except ProfilerMissing as error:
            fail(str(error), EXIT_BAD_INPUT)
        except OSError as error:
            fail(f"--profile: cannot make {profile}: {error.strerror or error}", EXIT_BAD_INPUT)
    if json_file is not None and not json_file.parent.is_dir():
        fail(f"--json: {json_file.parent} is not a folder", EXIT_BAD_INPUT)
    settings = BenchSettings(
        payments=payments,
        concurrency=concurrency,
        on_us=on_us,
        with_merchant=with_merchant,
        profile_dir=profile.resolve() if profile is not None else None,
        profile_format=profile_format,  # type: ignore[arg-type]  # checked above
        py_spy=py_spy,
    )
    scratch = None
    if data_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="semops-bench-")
        data_dir = Path(scratch.name)
    try:
        private_dir(data_dir)
        if (data_dir / "network.json").exists():
            fail(f"{data_dir} already holds a network: bench needs an empty folder")
        report = _bench_on(data_dir, settings, postgres)
    finally:
        if scratch is not None:
            scratch.cleanup()
    _print_bench(report)
    if json_file is not None:
        _write_json(json_file, report)
    if report.result.failed:
        raise typer.Exit(1)


def _bench_on(data_dir: Path, settings: BenchSettings, postgres: str | None) -> BenchReport:
    """The bench on fresh databases: SQLite files in `data_dir`, or PostgreSQL databases
    made for this run (dropped afterwards)."""
    import asyncio
    import secrets

    import aiohttp
    from rich.progress import Progress

    from semops.cli.common import run_async
    from semops.devnet.bench import MERCHANT_ROW, prepare, run_bench
    from semops.devnet.network import PROCESSORS, ROUTER_ID, ServiceError
    from semops.devnet.postgres import ServerUnavailable, create_databases, drop_databases

    services = [ROUTER_ID, *(processor_id for processor_id, _, _ in PROCESSORS)]
    if settings.with_merchant:
        services.append(MERCHANT_ROW)
    run = secrets.token_hex(4)
    names = [f"semops_bench_{run}_{service.replace('-', '_')}" for service in services]
    db_urls: dict[str, str] = {}
    try:
        if postgres is not None:
            created = asyncio.run(create_databases(postgres, names))
            db_urls = dict(zip(services, created.values(), strict=True))
    except ServerUnavailable as error:
        fail(f"--postgres: {error}")
    merchant_db = db_urls.pop(MERCHANT_ROW, None)
    network = Network(new_layout(data_dir, fixed_ports=False, db_urls=db_urls))

    def say(line: str) -> None:
        out.print(escape(line))

    try:
        prepared = prepare(network, settings, say, merchant_db)
        with Progress(console=out, transient=True) as progress:
            task = progress.add_task("paying", total=settings.payments)
            return run_async(
                run_bench(network, settings, prepared, say, lambda: progress.advance(task))
            )
    except (RuntimeError, ServiceError, aiohttp.ClientError) as error:
        fail(str(error))  # a service did not start, or refused or failed the setup: its words
    finally:
        _stop(network)
        if postgres is not None:
            with contextlib.suppress(ServerUnavailable):
                asyncio.run(drop_databases(postgres, names))


def _print_bench(report: BenchReport) -> None:
    from semops.devnet.costs import FSYNC_LEGEND, cost_table

    for service, outcome in report.profiles.items():
        if outcome["error"] is None:
            out.print(f"profile of {service}: {escape(str(outcome['file']))}")
        else:
            err.print(f"[red]profile of {service} failed:[/red] {escape(outcome['error'])}")
    if any(outcome["error"] for outcome in report.profiles.values()):
        err.print("(py-spy must be allowed to read other processes: root or CAP_SYS_PTRACE)")
    if report.notices_missing:
        out.print(f"{report.notices_missing} notices had not reached the shop when it was read")
    out.print(escape(report.describe()))
    out.print(escape(report.result.summary()))
    out.print(f"per completed payment in the pay phase; {escape(FSYNC_LEGEND)}")
    for line in cost_table(report.costs):
        out.print(escape(line))


def _write_json(path: Path, report: BenchReport) -> None:
    import json

    try:
        path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    except OSError as error:
        fail(f"--json: cannot write {path}: {error.strerror or error}")


def chaos(
    payments: Annotated[int, typer.Option("--payments", min=1, max=10_000)] = 40,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=2, max=64, help="Customers paying at once.")
    ] = 8,
    faults: Annotated[
        int, typer.Option("--faults", min=0, max=100_000, help="Message faults to inject.")
    ] = 40,
    kills: Annotated[
        int, typer.Option("--kills", min=0, max=1_000, help="kill -9 of a random service.")
    ] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same choices.")] = 1,
    postgres: Annotated[
        str | None,
        typer.Option("--postgres", help="Run on this PostgreSQL server instead of SQLite."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep the network's data here.")
    ] = None,
) -> None:
    """Payments through dropped, duplicated, delayed, reordered messages and kill -9;
    then check every payment is complete or absent on all sides and money is conserved."""
    import asyncio
    import secrets

    from semops.cli.common import run_async
    from semops.devnet.chaos import SERVICES, ChaosSettings, run_chaos
    from semops.devnet.postgres import ServerUnavailable, create_databases, drop_databases

    settings = ChaosSettings(
        payments=payments, concurrency=concurrency, faults=faults, kills=kills, seed=seed
    )
    scratch = None
    if data_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="semops-chaos-")
        data_dir = Path(scratch.name)
    private_dir(data_dir)
    if (data_dir / "network.json").exists():
        fail(f"{data_dir} already holds a network: chaos needs an empty folder")
    names = [f"semops_chaos_{secrets.token_hex(4)}_{s.replace('-', '_')}" for s in SERVICES]
    db_urls = None
    try:
        if postgres is not None:
            urls = asyncio.run(create_databases(postgres, names))
            db_urls = dict(zip(SERVICES, urls.values(), strict=True))
        report = run_async(
            run_chaos(data_dir, settings, db_urls, lambda line: out.print(escape(line) + " …"))
        )
    except RuntimeError as error:  # a service did not start: its own words say why
        fail(str(error))
    except ServerUnavailable as error:
        fail(f"--postgres: {error}")
    finally:
        if postgres is not None:
            with contextlib.suppress(ServerUnavailable):
                asyncio.run(drop_databases(postgres, names))
        if scratch is not None:
            scratch.cleanup()
    out.print(escape(report.summary()))
    if not report.ok:
        raise typer.Exit(1)

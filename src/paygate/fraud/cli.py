"""`paygate fraud train | evaluate`: the fraud model's commands (mounted by `paygate.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from paygate.fraud.defaults import ARTIFACTS_DIR, DEFAULT_ENSEMBLE

if TYPE_CHECKING:
    from paygate.fraud.simulator import SimulationConfig

app = typer.Typer(
    help="Fraud model: train it, and measure it on the published benchmark.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

Seed = Annotated[int, typer.Option(help="Simulation seed (0 is the handbook's data set).")]
Customers = Annotated[int, typer.Option("--customers", help="Customers (reduced runs).")]
Terminals = Annotated[int, typer.Option("--terminals", help="Terminals (reduced runs).")]
Days = Annotated[int, typer.Option("--days", help="Days simulated (reduced runs).")]
Ensemble = Annotated[int, typer.Option(help="Models averaged.", min=1)]
MaxIter = Annotated[int | None, typer.Option(help="Boosting iterations per model.", min=1)]


def _sim(seed: int, customers: int, terminals: int, days: int) -> SimulationConfig:
    # numpy, pandas and scikit-learn load only when a fraud command runs, not with every
    # `paygate` command.
    from paygate.fraud.simulator import SimulationConfig

    try:
        return SimulationConfig(
            n_customers=customers, n_terminals=terminals, n_days=days, seed=seed
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _params(max_iter: int | None) -> dict[str, Any] | None:
    return {"max_iter": max_iter} if max_iter else None


@app.command()
def train(
    history: Annotated[
        Path | None,
        typer.Option(
            help="CSV of labelled payments (id, created, card, merchant, amount, "
            "currency, is_fraud); without it, the benchmark's training week.",
            exists=True,
        ),
    ] = None,
    from_db: Annotated[
        bool,
        typer.Option(
            "--from-db",
            help="Labels from the gateway's own payments and fraud reports "
            "(PAYGATE_DATABASE_URL; live mode only unless --include-test).",
        ),
    ] = False,
    include_test: Annotated[
        bool, typer.Option("--include-test", help="With --from-db: test-mode payments too.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Directory for the artifact.")] = ARTIFACTS_DIR,
    seed: Seed = 0,
    customers: Customers = 5_000,
    terminals: Terminals = 10_000,
    days: Days = 183,
    ensemble: Ensemble = DEFAULT_ENSEMBLE,
    max_iter: MaxIter = None,
) -> None:
    """Train the model and save it as a versioned artifact with a JSON sidecar."""
    if history is not None and from_db:
        raise typer.BadParameter("give --history or --from-db, not both")
    if history is not None or from_db:
        from paygate.fraud.history import read_history, train_on_history

        if from_db:
            import asyncio

            from paygate.config import get_settings
            from paygate.fraud.labels import read_labelled_history

            url = get_settings().resolved_database_url
            labelled = asyncio.run(read_labelled_history(url, include_test=include_test))
            err.print(f"{len(labelled)} payments, {int(labelled['is_fraud'].sum())} reported")
        else:
            assert history is not None
            labelled = read_history(history)
        try:
            model = train_on_history(labelled, ensemble=ensemble, params=_params(max_iter))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    else:
        from paygate.fraud.evaluation import evaluate

        err.print("simulating the benchmark and training on its training week…")
        _, model = evaluate(
            _sim(seed, customers, terminals, days),
            reference=False,
            ensemble=ensemble,
            params=_params(max_iter),
        )
    from paygate.fraud.model import save

    path = save(model, out)
    err.print(f"saved {path}")
    typer.echo(json.dumps(model.metrics), err=True)


@app.command()
def evaluate(
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    customers: Customers = 5_000,
    terminals: Terminals = 10_000,
    days: Days = 183,
    reference: Annotated[bool, typer.Option(help="Also run the handbook's forest.")] = True,
    ensemble: Ensemble = DEFAULT_ENSEMBLE,
    max_iter: MaxIter = None,
    save_to: Annotated[
        Path | None, typer.Option("--save", help="Also save the trained model here.")
    ] = None,
) -> None:
    """Simulate, replay through the online features, train, test; print the figures beside the
    handbook's baselines."""
    from paygate.fraud.evaluation import evaluate as run

    sim = _sim(seed, customers, terminals, days)
    if not as_json:
        err.print(
            f"benchmark: {customers} customers, {terminals} terminals, {days} days, seed {seed}"
        )
    try:
        result, model = run(sim, reference=reference, ensemble=ensemble, params=_params(max_iter))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if save_to is not None:
        from paygate.fraud.model import save

        result["artifact"] = str(save(model, save_to))
    if as_json:
        typer.echo(json.dumps(_no_nan(result), allow_nan=False))
        return
    _table(result)


def _no_nan(value: Any) -> Any:
    # A figure is undefined (NaN) when a reduced run's test week has no fraud: JSON null.
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def _table(result: dict[str, Any]) -> None:
    split = result["split"]
    out = Console()
    out.print(
        f"{result['transactions']:,} payments, {result['frauds']:,} frauds; "
        f"train {split['train'][0]}..{split['train'][1]} ({split['train_transactions']:,}, "
        f"{split['train_frauds']} frauds), test {split['test'][0]}..{split['test'][1]} "
        f"({split['test_transactions']:,}, {split['test_frauds']} frauds)"
    )
    table = Table("model", "AUC ROC", "average precision", "card precision@100")
    keys = ("auc_roc", "average_precision", "card_precision_at_100")
    rows: list[tuple[str, dict[str, Any]]] = [("paygate (online features, GBT)", result)]
    if result["reference"] is not None:
        rows.append(("reference forest, handbook features (this run)", result["reference"]))
    rows += [
        ("published random forest", result["published"]["random_forest"]),
        ("published logistic regression", result["published"]["logistic_regression"]),
    ]
    for name, figures in rows:
        table.add_row(name, *(f"{figures[k]:.3f}" if figures[k] is not None else "—" for k in keys))
    out.print(table)

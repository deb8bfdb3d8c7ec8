"""`lamina rollout --model DIR`: the saved model acts as a policy in the simulator its config names, beside
the expert, the do-nothing action and random actions on the same unseen seeds; optional DAgger rounds.
The result is written to rollout.json in the model folder."""
from __future__ import annotations

from pathlib import Path

from lamina.errors import ConfigError


def training_data(model, data: str | None) -> str:
    """The rows DAgger adds to: --data, else the data set or file the model was trained on, when lamina can
    read it again."""
    if data:
        return data
    source = str(model.training_.get("source", ""))
    if source.startswith("data set '"):
        return source.removeprefix("data set '").removesuffix("'")
    if len(source) > 2 and source[0] == source[-1] == "'" and Path(source[1:-1]).is_file():  # a file, still there
        return source[1:-1]
    raise ConfigError(f"--dagger adds to the rows the model was trained on ({source or 'not recorded'}), which lamina "
                      f"cannot read again (only a named data set or a file still in place); pass them with --data FILE")


def rollout_command(args) -> None:
    from lamina.api import load
    from lamina.simulation.dagger import dagger
    from lamina.simulation.rollout import compare, settings, table, write

    if args.relabel and not args.dagger:
        raise ConfigError("--relabel applies to --dagger: add --dagger N, or leave out --relabel")
    model = load(args.model)
    simulation = settings(model, args.environment, args.episodes, args.seed)
    data = training_data(model, args.data) if args.dagger else None
    result = compare(model, simulation)
    print(f"{simulation.environment}: {simulation.episodes} episodes on seeds {result['seeds'][0]}-"
          f"{result['seeds'][1]} (success: {result['success_means']})")
    print(table(result))
    if args.dagger:
        print(f"DAgger: {args.dagger} rounds of {simulation.episodes} episodes, the expert labelling the visited "
              f"states, the model trained again on {data} plus those rows")
        if args.relabel:
            print(f"  the expert first relabels every row of {data}")
        result["dagger"] = dagger(model, simulation, data, args.dagger, args.dagger_output, report=lambda row: print(
            f"  round {row['round']}: {row['rows']} rows, return {row['return_mean']:.2f} ± {row['return_std']:.2f}"),
            relabel=args.relabel)
        result["dagger_relabelled"] = bool(args.relabel)
        if args.dagger_output:
            print(f"the last round's model saved to {args.dagger_output}")
    print(f"rollout saved to {write(args.model, result)}; `lamina report --model {args.model}` shows it")

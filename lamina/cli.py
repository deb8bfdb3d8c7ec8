"""The command line: lamina train | tune | evaluate | predict | recommend | compare | explain | report | serve |
export | init-config | datasets | config | config-schema | rollout."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import yaml

from lamina.errors import ArtifactError, ConfigError, DataError


def _train(args) -> None:
    from lamina import devices
    from lamina.api import Model
    from lamina.metrics import table

    model = Model(args.config or _folder_config(args.data))
    if args.seed is not None:
        model.config.training.seed = args.seed
    model.fit(args.data, output_dir=args.output, resume=args.resume, quiet=args.quiet)
    if not devices.place(model.config.training.device).main:
        return  # under torchrun the other processes only trained; rank 0 reports, compares and writes
    info = model.training_
    learned = info.get("learned_rows", info["rows"]["train"])
    of_them = f", learning from the {learned} normal ones" if learned != info["rows"]["train"] else ""
    print(f"trained on {info['rows']['train']} rows{of_them} (validation {info['rows']['validation']}, "
          f"test {info['rows']['test']}); learning rate {info['learning_rate']:.2e}; best epoch {info['best_epoch']}")
    print(table(model.metrics_))
    print(f"model saved to {args.output}")
    streamed = "streaming" in model.training_  # the data may not fit in memory: nothing reads it whole again
    if streamed and not args.no_compare:
        print("no classic baseline: the data was streamed (training.streaming); compare a sample of it with "
              "`lamina compare` on a smaller Parquet file")
    elif not args.no_compare:
        _compare_after_training(model, args)
    if not args.no_report:
        from lamina import report

        written = report.write(model, Path(args.output) / 'report.html', data=None if streamed else args.data)
        print(f"report: {written}")


def _compare_after_training(model, args) -> None:
    """Deep learning is not always needed: every training run ends with a classic baseline on
    the same split; a model it cannot compare (e.g. generated text) says why and carries on."""
    from lamina import artifact

    if model.outputs_[0].generates:
        print("no classic baseline: the first output is generated text")
        return
    try:
        result = model.compare(args.data)
    except DataError as error:  # e.g. no test rows: training still succeeded
        print(f"lamina: warning: no comparison with a classic baseline: {error}", file=sys.stderr)
        return
    artifact.add_file(args.output, artifact.COMPARISON, json.dumps(result, indent=1))
    if result["skipped"]:
        print(f"no classic baseline: {result['verdict']}")
        return
    print(f"deep vs classic ({result['classic']['model']}): {result['verdict']}")


def _tune(args) -> None:
    _needs("tune", "optuna")
    from lamina import report
    from lamina.metrics import table
    from lamina.tune import MODEL_FOLDER, table as leaderboard, tune

    result = tune(args.config, args.data, args.trials, args.output, jobs=args.jobs, storage=args.storage,
                  study_name=args.study, timeout=args.timeout, quiet=args.quiet)
    best, folder = result["best"], Path(args.output)
    print(leaderboard(result["leaderboard"]))
    print(f"{len(result['leaderboard'])} trials in the study ({result['pruned']} pruned); best: trial {best['trial']}, "
          f"{result['metric']} {best['value']:.4f}; this run's search took {result['seconds']:.1f}s")
    print(f"the best config trained again ({folder / 'best.yaml'}), measured once on the test rows:")
    print(table(result["metrics"]))
    print(f"model saved to {folder / MODEL_FOLDER}; leaderboard: {folder / 'leaderboard.csv'}, "
          f"{folder / 'leaderboard.html'}")
    if not args.no_report:
        print(f"report: {report.write(result['model'], folder / MODEL_FOLDER / 'report.html', data=args.data)}")


def _report(args) -> None:
    from lamina import report
    from lamina.api import load

    model = load(args.model)
    print(f"report: {report.write(model, args.output or Path(args.model) / 'report.html', data=args.data)}")


def _folder_config(data: str) -> dict:
    """With no --config, a folder of class sub-folders gets a default image classifier."""
    from lamina.data import read_folder
    from lamina.features.image import folder_config

    if not Path(data).is_dir():
        raise ConfigError("--config is needed unless --data is a folder of class sub-folders of images; "
                          "`lamina init-config --data FILE --target COLUMN` writes a starting config")
    config = folder_config(read_folder(Path(data)))
    print("no --config given; training this default (image size and channels from the files' headers, the encoder "
          "from their size; save it as a YAML file to change it):")
    print(yaml.safe_dump(config, sort_keys=False, default_flow_style=None), end="")
    return config


def _evaluate(args) -> None:
    from lamina.api import load
    from lamina.metrics import table

    result = load(args.model).evaluate(args.data)
    print(table({"evaluation": result}))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1), "utf-8")


def _predict(args) -> None:
    from lamina.api import load
    from lamina.stream import predict_file

    model = load(args.model)
    rows, chunks = predict_file(model, args.data, args.output, args.chunk_size,
                                progress=not args.quiet and bool(args.output) and sys.stderr.isatty())
    if args.output:
        print(f"wrote {rows} predictions to {args.output}" + (f" ({chunks} chunks)" if chunks > 1 else ""))


def _recommend(args) -> None:
    from lamina.api import load
    from lamina.stream import Writer

    model = load(args.model)
    users = args.users if _is_file(args.users) else [user.strip() for user in args.users.split(",") if user.strip()]
    if isinstance(users, list) and not users:
        raise DataError("--users is empty; give user ids separated by commas (--users 1,2,3) or a file of rows")
    wide = model.recommend(users, k=args.k, exclude_seen=not args.include_seen, output=args.output_name)
    item = wide.columns[1]  # after the user column
    long = wide.explode([item, f"{item}_scores"])  # one line per (user, recommended item)
    long.insert(1, "rank", long.groupby(level=0).cumcount() + 1)
    long = long.rename(columns={f"{item}_scores": "score"}).reset_index(drop=True)
    writer, complete = Writer(args.output), False
    try:
        writer.write(long)
        complete = True
    finally:
        writer.close(complete)
    if args.output:
        print(f"wrote {len(long)} recommendations for {len(wide)} users to {args.output}")


def _is_file(text: str) -> bool:
    """Whether --users names a file: a long list of ids is no path (probing it may raise 'File name too
    long'), and a name with a data suffix that does not exist is a mistyped file, not an id."""
    from lamina.data import READERS

    try:
        return Path(text).is_file() or ("," not in text and Path(text).suffix.lower() in READERS)
    except (OSError, ValueError):  # too long for a path, or holding a NUL byte: ids
        return False


def _needs(extra: str, *modules: str) -> None:
    """Optional dependencies are checked before any work, with the install line in the message."""
    import importlib.util

    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"this command needs {', '.join(missing)}: pip install 'lamina[{extra}]'")


def _serve(args) -> None:
    _needs("serve", "fastapi", "uvicorn", "python_multipart")
    import uvicorn

    from lamina.api import load
    from lamina.serving.app import Settings, create_app

    model = load(args.model)
    settings = Settings(max_batch_rows=args.max_batch_rows, batch_wait_ms=args.batch_wait_ms,
                        inline_rows=args.inline_rows,
                        max_request_rows=args.max_request_rows, max_body_bytes=int(args.max_body_mb * 2 ** 20),
                        max_image_pixels=args.max_image_pixels, max_request_pixels=args.max_request_pixels,
                        max_request_samples=args.max_request_samples)
    print(f"serving {args.model} at http://{args.host}:{args.port}/ (API documentation at /docs)", flush=True)
    uvicorn.run(create_app(model, args.model, settings), host=args.host, port=args.port, log_level=args.log_level)


def _export(args) -> None:
    _needs("export", *(["onnx"] if args.format == "onnx" else []))
    from lamina.api import load
    from lamina.export import export

    output = args.output or f"{str(args.model).rstrip('/')}-{args.format}"
    target = export(load(args.model), output, args.format)
    print(f"exported {args.model} to {target} (preprocessing in {Path(output) / 'preprocessing.json'})")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    return parse


def _compare(args) -> None:
    from lamina import artifact
    from lamina.api import load
    from lamina.compare import table

    model = load(args.model)
    result = model.compare(args.data, resamples=args.resamples, seed=args.seed)
    if result["skipped"]:
        raise DataError(result["skipped"])
    print(table(result))
    saved = artifact.add_file(args.model, artifact.COMPARISON, json.dumps(result, indent=1))
    print(f"comparison saved to {saved}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), "utf-8")


def _explain(args) -> None:
    from lamina import features
    from lamina.api import load
    from lamina.data import read_table
    from lamina.explain_render import importance_summary, summary

    model = load(args.model)
    frame, _ = read_table(args.data, features.read_types(model.config))
    if args.rows is not None and args.rows < 1:
        raise ConfigError(f"--rows must be at least 1; got {args.rows}")
    result = model.explain(frame.head(args.rows) if args.rows else frame, method=args.method,
                           output=args.output_name, target=args.target, steps=args.steps)
    print(summary(result, top=args.top))
    result = {"explanations": result}
    if args.importance:
        result["importance"] = model.importance(frame, output=args.output_name, target=args.target,
                                                method=args.method)
        print(importance_summary(result["importance"], top=args.top))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1), "utf-8")
        print(f"wrote the explanations to {args.output}")


def _init_config(args) -> None:
    from lamina.config import load_config, to_yaml
    from lamina.data import read_sample
    from lamina.init_config import SAMPLE_ROWS, infer_config

    frame, source = read_sample(args.data, SAMPLE_ROWS)  # a large file is not read whole to infer types
    config, notes = infer_config(frame, args.target)
    config = load_config(config).readable()  # what was inferred, and the defaults that matter under it
    header = [f"# lamina config inferred from {source} (its first {len(frame)} rows): check the types, then train with",
              f"#   lamina train --config THIS.yaml --data {args.data} --output runs/model",
              "# each column: the type chosen, its confidence (why), and a close runner-up"] + \
        [f"# {note}" for note in notes]
    print("\n".join(header))
    print(to_yaml(config), end="")


def _config(args) -> None:
    """A config file, or a saved model's config, as a person reads it, or with --resolved every value."""
    from lamina import artifact
    from lamina.config import load_config, to_yaml

    source = Path(args.source)
    config = artifact.read_config(source) if source.is_dir() else load_config(source)
    print(to_yaml(config.to_dict() if args.resolved else config.readable()), end="")


def _datasets(args) -> None:
    from lamina import datasets

    print(datasets.listing() if args.action == "list" or not args.name else datasets.describe(args.name))


def _rollout(args) -> None:
    _needs("simulation", "gymnasium")
    from lamina.simulation.command import rollout_command

    rollout_command(args)


def _config_schema(args) -> None:
    from lamina.config import Config

    print(json.dumps(Config.model_json_schema(), indent=1))


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="lamina", description="Declarative deep learning on PyTorch.")
    commands = main.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and evaluate a model, then save it")
    train.add_argument("--config", help="YAML config file (optional when --data is a folder of class sub-folders)")
    train.add_argument("--data", required=True, help="CSV/Parquet/JSONL file, or a data set name (e.g. adult)")
    train.add_argument("--output", required=True, help="folder for the model, checkpoints and metrics")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    train.add_argument("--seed", type=int, help="override training.seed")
    train.add_argument("--no-compare", action="store_true", help="skip the classic baseline trained on the same split")
    train.add_argument("--no-report", action="store_true", help="skip writing report.html beside the model")
    train.set_defaults(run=_train)
    tune = commands.add_parser("tune", help="search the config's tune section with Optuna, then train the best "
                                            "config (pip install 'lamina[tune]')")
    tune.add_argument("--config", required=True, help="YAML config file with a tune: section")
    tune.add_argument("--data", required=True, help="CSV/Parquet/JSONL file, or a data set name (e.g. adult)")
    tune.add_argument("--output", required=True, help="folder for the leaderboard, best.yaml and the best model")
    tune.add_argument("--trials", type=_positive(int), default=20, help="trials this command runs (default 20)")
    tune.add_argument("--jobs", type=_positive(int), default=1, help="worker processes sharing the trials")
    tune.add_argument("--storage", help="a database URL (sqlite:///tune.db) or a journal file shared by several "
                                        "processes or machines (default: study.log in --output)")
    tune.add_argument("--study", help="the study's name in the storage (default: lamina)")
    tune.add_argument("--timeout", type=_positive(float), help="stop starting trials after this many seconds")
    tune.add_argument("--quiet", action="store_true", help="no line per trial, no progress of the final training")
    tune.add_argument("--no-report", action="store_true", help="skip writing report.html beside the best model")
    tune.set_defaults(run=_tune)
    report = commands.add_parser("report", help="write one self-contained HTML report about a saved model")
    report.add_argument("--model", required=True)
    report.add_argument("--data", help="the data the model was trained on: adds importance and explained examples")
    report.add_argument("--output", help="the HTML file (default: report.html in the model folder)")
    report.set_defaults(run=_report)
    evaluate = commands.add_parser("evaluate", help="metrics of a saved model on labelled data")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--output", help="also write the metrics as JSON here")
    evaluate.set_defaults(run=_evaluate)
    predict = commands.add_parser("predict", help="predictions of a saved model")
    predict.add_argument("--model", required=True)
    predict.add_argument("--data", required=True)
    predict.add_argument("--output", help="CSV, Parquet or JSONL file (default: CSV on standard output)")
    predict.add_argument("--chunk-size", type=_positive(int), default=50_000,
                         help="rows read, predicted and written at a time (bounds memory; default 50000)")
    predict.add_argument("--quiet", action="store_true", help="no progress bar (it is shown on a terminal only)")
    predict.set_defaults(run=_predict)
    recommend = commands.add_parser("recommend", help="the top items for some users, from a model with a ranking "
                                                      "output")
    recommend.add_argument("--model", required=True)
    recommend.add_argument("--users", required=True, help="user ids separated by commas (1,2,3), or a CSV/Parquet/"
                                                          "JSONL file of rows holding the model's inputs")
    recommend.add_argument("--k", type=_positive(int), help="items per user (default: the output's k)")
    recommend.add_argument("--include-seen", action="store_true", help="also recommend items the user chose in "
                                                                       "training")
    recommend.add_argument("--output-name", help="the ranking output to use (default: the first)")
    recommend.add_argument("--output", help="CSV, Parquet or JSONL file (default: CSV on standard output)")
    recommend.set_defaults(run=_recommend)

    compare = commands.add_parser("compare", help="train a classic baseline on the model's own split and "
                                                  "compare the two on the test rows")
    compare.add_argument("--model", required=True)
    compare.add_argument("--data", required=True, help="the data the model was trained on (same file or data set)")
    compare.add_argument("--json", help="also write the result as JSON here")
    compare.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples of the test rows")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resamples and the classic models")
    compare.set_defaults(run=_compare)
    explain = commands.add_parser("explain", help="which inputs drove each prediction (attributions)")
    explain.add_argument("--model", required=True)
    explain.add_argument("--data", required=True, help="the rows to explain")
    explain.add_argument("--method", default="integrated_gradients",
                         help="integrated_gradients (default), saliency, input_x_gradient, deeplift, gradient_shap "
                              "or feature_ablation")
    explain.add_argument("--rows", type=int, help="explain only the first N rows")
    explain.add_argument("--output-name", help="the output to explain (default: the first)")
    explain.add_argument("--target", help="for a category or set output, the label to explain (default: the "
                                          "predicted one)")
    explain.add_argument("--steps", type=int, default=50, help="integration steps (samples for gradient_shap)")
    explain.add_argument("--top", type=int, default=5, help="inputs and tokens shown per row")
    explain.add_argument("--importance", action="store_true",
                         help="also global importance over all the --data rows (they need the outputs filled in)")
    explain.add_argument("--output", help="also write everything as JSON here")
    explain.set_defaults(run=_explain)
    serve = commands.add_parser("serve", help="serve a saved model over HTTP (pip install 'lamina[serve]')")
    serve.add_argument("model", help="model folder (the --output of lamina train)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch-rows", type=_positive(int), default=256,
                       help="most rows merged from concurrent requests into one prediction (1: no merging)")
    serve.add_argument("--batch-wait-ms", type=float, default=2.0,
                       help="under concurrent load, how long a batch waits for more requests to join it "
                            "(default 2; a lone client never waits)")
    serve.add_argument("--inline-rows", type=int, default=8, choices=range(9), metavar="0..8",
                       help="a request of at most this many rows, alone in the server, is predicted at once on "
                            "its event loop when the model is fast (a few rows in under 5 ms); 0: always by the batch worker")
    serve.add_argument("--max-request-rows", type=_positive(int), default=1000, help="most rows per request")
    serve.add_argument("--max-body-mb", type=_positive(float), default=10.0, help="largest request body in MiB")
    serve.add_argument("--max-image-pixels", type=_positive(int), default=25_000_000,
                       help="largest image, in pixels (width x height, read from its header before decoding)")
    serve.add_argument("--max-request-pixels", type=_positive(int), default=50_000_000,
                       help="decoded pixels of all the images of one request")
    serve.add_argument("--max-request-samples", type=_positive(int), default=50_000_000,
                       help="decoded sound samples (channels included) of all the sounds of one request")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(run=_serve)
    export = commands.add_parser("export", help="export a saved model to ONNX or torch.export, with its "
                                                "preprocessing as JSON")
    export.add_argument("model", help="model folder (the --output of lamina train)")
    export.add_argument("--format", choices=["onnx", "torch-export"], default="onnx")
    export.add_argument("--output", help="folder to write (default: MODEL-FORMAT beside the model folder)")
    export.set_defaults(run=_export)
    init = commands.add_parser("init-config", help="print a starting config inferred from the data")
    init.add_argument("--data", required=True)
    init.add_argument("--target", required=True, action="append", help="output column (repeat for several)")
    init.set_defaults(run=_init_config)
    data = commands.add_parser("datasets", help="list or describe the named example data sets")
    data.add_argument("action", choices=["list", "show"])
    data.add_argument("name", nargs="?")
    data.set_defaults(run=_datasets)
    shown = commands.add_parser("config", help="print a config as a person reads it (the keys set and the defaults "
                                               "that matter under them), or every value with --resolved")
    shown.add_argument("source", help="a YAML config file, or a model folder (the --output of lamina train)")
    shown.add_argument("--resolved", action="store_true", help="every key with its value, defaults included: for "
                                                               "a model folder, exactly what it was trained with")
    shown.set_defaults(run=_config)
    rollout = commands.add_parser("rollout", help="run a saved model as a policy in its simulator, beside the "
                                                  "expert, zero and random actions (pip install 'lamina[simulation]')")
    rollout.add_argument("--model", required=True)
    rollout.add_argument("--episodes", type=_positive(int), help="episodes per policy (default: simulation.episodes)")
    rollout.add_argument("--seed", type=int, help="seed of the first episode (default: simulation.seed)")
    rollout.add_argument("--environment", help="the Gymnasium environment (default: simulation.environment)")
    rollout.add_argument("--dagger", type=_positive(int), help="also run N DAgger rounds: the expert labels the "
                                                               "states the model visits and it is trained again")
    rollout.add_argument("--data", help="for --dagger, the rows the model was trained on (default: its data set or "
                                        "file)")
    rollout.add_argument("--dagger-output", help="for --dagger, save the last round's model in this folder")
    rollout.add_argument("--relabel", action="store_true", help="for --dagger, the expert also relabels the rows the "
                                                                "model was trained on (a noisy demonstrator's)")
    rollout.set_defaults(run=_rollout)
    schema = commands.add_parser("config-schema", help="print the config's JSON Schema (for editors)")
    schema.set_defaults(run=_config_schema)
    return main


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings about the data ('12 texts were truncated') as one plain line, not a source listing."""
    print(f"lamina: warning: {message}", file=file or sys.stderr)


def _interrupted(args) -> str:
    """What an interrupted command leaves behind, and how to go on: only train can resume."""
    if args.command == "train":
        return "; rerun with --resume to continue from the last finished epoch checkpointed in --output"
    if args.command == "tune":
        return "; rerun the same command to add trials to the study: finished ones are kept in its storage"
    if args.command in ("predict", "recommend"):
        return ("; nothing was written to --output (the partial file was removed); rerun the command"
                if args.output else "; the rows printed so far are incomplete")
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    finally:
        from lamina import devices

        if devices.launched_by_torchrun() and devices.dist.is_initialized():
            devices.dist.destroy_process_group()


def _run(args) -> int:
    try:
        with warnings.catch_warnings():  # restores the usual display when main returns
            warnings.showwarning = _one_line_warning  # the documented hook for showing warnings
            args.run(args)
            sys.stdout.flush()  # a closed pipe shows here, not as an 'Exception ignored' when Python exits
    except (ConfigError, DataError, ArtifactError) as error:
        print(f"lamina: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lamina predict ... | head`: the reader left, as it may; quiet, like other tools
        # Python would report the pipe again when it flushes stdout at exit (the recipe of its signal docs)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell shows for a tool the pipe stopped
    except OSError as error:  # a file that cannot be read or written: a message, not a traceback
        where = f"'{error.filename}': " if error.filename else ""
        print(f"lamina: error: {where}{error.strerror or error}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lamina: interrupted{_interrupted(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

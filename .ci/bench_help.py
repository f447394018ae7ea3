"""How long `--help` takes, per command, in fresh processes: `python .ci/bench_help.py [REPEATS] [PACKAGE]`.
Prints the median and range of the wall seconds of each command's `--help` (the import of its module included).
PACKAGE (default `medsft`) lets an older copy of the package, renamed, be timed side by side."""
import statistics, subprocess, sys, time

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
PKG = sys.argv[2] if len(sys.argv) > 2 else "medsft"
COMMANDS = {"medsft": dict(medsft_predict="commands", medsft_eval="commands", medsft_merge="commands",
                           medsft_download="commands", medsft_bench="commands", medsft_data="data",
                           medsft_train="train_full", medsft_train_lora="train_lora"),
            "old": dict(medsft_predict="inference", medsft_eval="inference", medsft_merge="train_lora",
                        medsft_download="model", medsft_bench="bench", medsft_data="data",
                        medsft_train="train_full", medsft_train_lora="train_lora")}
table = COMMANDS["medsft" if PKG == "medsft" else "old"]
for name, module in table.items():
    code = (f"import contextlib, io\nfrom {PKG}.{module} import {name}\n"
            f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit): {name}.main(['--help'])")
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    print(f"{name:18} median {statistics.median(times):5.2f} s  (min {min(times):.2f}, max {max(times):.2f}, n={REPEATS})")

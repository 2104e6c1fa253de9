//! `cargo xtask bench`: run the criterion benches, then tabulate median times and GFLOP/s.
//!
//! Criterion 0.8 writes, for every benchmark, `<target>/criterion/<group>/<function>/<value>/new/`
//! with `benchmark.json` (the ids as given: `group_id`, `function_id`, `value_str`) and
//! `estimates.json` (`median.point_estimate` in nanoseconds). The table takes the results this
//! run wrote and reads the arithmetic from the id: `m<M> k<K> n<N>` tokens mean `2·M·K·N`
//! flops, a `flop<F>` token means `F`; ids with neither get a time but no GFLOP/s.

use crate::json;
use crate::provision::Provides;
use crate::run::{self, Failure};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The package holding the benches.
const PACKAGE: &str = "manabi-benches";
/// Criterion arguments that `--quick` adds: short warm-up and measurement, the fewest samples.
const QUICK: &[&str] = &[
    "--warm-up-time",
    "0.2",
    "--measurement-time",
    "0.5",
    "--sample-size",
    "10",
];

/// One benchmark's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Criterion's group (`gemm`).
    pub group: String,
    /// The function id: for the products, the backend.
    pub function: String,
    /// The value string: the shape, with its dimensions.
    pub value: String,
    /// Median time per iteration, ns.
    pub median_ns: f64,
    /// Floating-point operations per iteration, if the id says.
    pub flops: Option<f64>,
    /// When estimates.json was written (orders the table as the benches ran).
    pub written: SystemTime,
}

impl Row {
    /// GFLOP/s at the median time.
    pub fn gflops(&self) -> Option<f64> {
        self.flops.map(|f| f / self.median_ns)
    }
}

/// Runs the bench task with the arguments after `bench`.
pub fn bench(args: &[String]) -> Result<(), Failure> {
    let (quick, criterion_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut is_quick = false;
    for a in quick {
        match a.as_str() {
            "--quick" => is_quick = true,
            other => {
                return Err(Failure::msg(format!(
                    "unknown bench option {other:?}; usage: cargo xtask bench [--quick] [-- <criterion args>]"
                )));
            }
        }
    }

    let blas = Provides::Library("libopenblas.so").present();
    let mut cmd = run::cargo();
    cmd.args(["bench", "-p", PACKAGE]);
    if blas {
        cmd.args(["--features", "blas"]);
    } else {
        println!(
            "note: libopenblas.so not found, so no openblas rows (apt-get install libopenblas-dev)"
        );
    }
    cmd.arg("--");
    if is_quick {
        cmd.args(QUICK);
    }
    cmd.args(criterion_args);
    // One thread each: backends compare per core, and other work on the machine adds less noise.
    let threads = std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| {
        cmd.env("OPENBLAS_NUM_THREADS", "1");
        "1".to_string()
    });

    println!("$ {}", run::show(&cmd));
    // Criterion stamps files with whole seconds on some filesystems: allow for that.
    let started = SystemTime::now() - Duration::from_secs(1);
    let status = cmd
        .status()
        .map_err(|e| Failure::msg(format!("cannot start cargo: {e}")))?;
    if !status.success() {
        return Err(Failure::msg(format!("cargo bench exited with {status}")));
    }

    let criterion = run::target_dir().join("criterion");
    let rows = collect(&criterion, started);
    if rows.is_empty() {
        return Err(Failure::msg(format!(
            "no criterion results written under {} by this run (did the filter match nothing?)",
            criterion.display()
        )));
    }
    let table = table(&rows);
    println!("\n{table}");

    let mut md = String::new();
    let _ = writeln!(md, "# manabi benchmarks\n");
    let _ = writeln!(md, "- CPU: {} ({} logical)", cpu_model(), logical_cpus());
    let _ = writeln!(md, "- date: {}", utc_now());
    let _ = writeln!(
        md,
        "- command: `cargo xtask bench{}{}`",
        if is_quick { " --quick" } else { "" },
        if criterion_args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", criterion_args.join(" "))
        }
    );
    let _ = writeln!(
        md,
        "- OPENBLAS_NUM_THREADS={threads}; f32; median of criterion's samples; GFLOP/s = flops / median\n"
    );
    md.push_str(&table);
    let out = run::target_dir().join("bench").join("summary.md");
    fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))
        .and_then(|()| fs::write(&out, md))
        .map_err(|e| Failure::msg(format!("cannot write {}: {e}", out.display())))?;
    println!("written to {}", out.display());
    Ok(())
}

/// Results under `criterion` whose estimates were written at or after `since`, in run order:
/// groups, then values, then functions, each by when it first appeared.
pub fn collect(criterion: &Path, since: SystemTime) -> Vec<Row> {
    let mut dirs = Vec::new();
    find_new_dirs(criterion, &mut dirs);
    let mut rows: Vec<Row> = dirs
        .iter()
        .filter_map(|d| read_row(d))
        .filter(|r| r.written >= since)
        .collect();
    let first = |same: &dyn Fn(&Row) -> bool| {
        rows.iter()
            .filter(|r| same(r))
            .map(|r| r.written)
            .min()
            .unwrap_or(UNIX_EPOCH)
    };
    let mut keyed: Vec<((SystemTime, SystemTime, SystemTime), Row)> = rows
        .iter()
        .map(|r| {
            let g = first(&|o| o.group == r.group);
            let v = first(&|o| o.group == r.group && o.value == r.value);
            let f = first(&|o| o.group == r.group && o.function == r.function);
            ((g, v, f), r.clone())
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    rows = keyed.into_iter().map(|(_, r)| r).collect();
    rows
}

/// Every `new` folder (criterion's latest results) below `dir`.
fn find_new_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if e.file_name() == "new" {
            out.push(p);
        } else if e.file_name() != "report" {
            find_new_dirs(&p, out);
        }
    }
}

/// One result from a `new` folder, if both files are there and readable.
fn read_row(new: &Path) -> Option<Row> {
    let est_path = new.join("estimates.json");
    let written = fs::metadata(&est_path).and_then(|m| m.modified()).ok()?;
    let est = json::parse(&fs::read_to_string(&est_path).ok()?).ok()?;
    let id = json::parse(&fs::read_to_string(new.join("benchmark.json")).ok()?).ok()?;
    let text = |k: &str| id.get(k).and_then(json::Value::as_str).map(str::to_string);
    let group = text("group_id")?;
    let function = text("function_id").unwrap_or_default();
    let value = text("value_str").unwrap_or_default();
    let median_ns = est.path(&["median", "point_estimate"])?.as_f64()?;
    let flops = flops_of(&value).or_else(|| flops_of(&function));
    Some(Row {
        group,
        function,
        value,
        median_ns,
        flops,
        written,
    })
}

/// The flops an id announces: `m.. k.. n..` → `2·m·k·n`, or `flop..` as given.
pub fn flops_of(id: &str) -> Option<f64> {
    let (mut m, mut k, mut n, mut direct) = (None, None, None, None);
    for tok in id.split(|c: char| c.is_whitespace() || c == ',' || c == '/') {
        let num = |prefix: &str| tok.strip_prefix(prefix).and_then(|d| d.parse::<u64>().ok());
        if let Some(f) = num("flop") {
            direct = Some(f as f64);
        } else if let Some(v) = num("m") {
            m = Some(v as f64);
        } else if let Some(v) = num("k") {
            k = Some(v as f64);
        } else if let Some(v) = num("n") {
            n = Some(v as f64);
        }
    }
    direct.or(match (m, k, n) {
        (Some(m), Some(k), Some(n)) => Some(2.0 * m * k * n),
        _ => None,
    })
}

/// A time in ns as `850 ns`, `12.3 µs`, `4.56 ms` or `1.20 s`.
pub fn human_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A Markdown table: benchmark, backend, median, GFLOP/s; columns padded for the terminal.
pub fn table(rows: &[Row]) -> String {
    let mut cells: Vec<[String; 4]> = vec![[
        "benchmark".into(),
        "backend".into(),
        "median".into(),
        "GFLOP/s".into(),
    ]];
    for r in rows {
        let bench = match (r.group.as_str(), r.value.is_empty()) {
            (g, true) => g.to_string(),
            ("gemm", false) => r.value.clone(),
            (g, false) => format!("{g}: {}", r.value),
        };
        cells.push([
            bench,
            r.function.clone(),
            human_time(r.median_ns),
            r.gflops().map_or("-".into(), |g| format!("{g:.1}")),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        out.push('|');
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Text left, numbers right.
            if c < 2 {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (c, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(*w);
                let _ = write!(
                    out,
                    "{}|",
                    if c < 2 {
                        format!(" {dashes} ")
                    } else {
                        format!(" {}:", &dashes)
                    }
                );
            }
            out.push('\n');
        }
    }
    out
}

/// The CPU's "model name" from /proc/cpuinfo.
fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_come_from_the_id() {
        // 2·100·784·50 = 7 840 000.
        assert_eq!(flops_of("forward m100 k784 n50"), Some(7_840_000.0));
        assert_eq!(flops_of("dW1 m784 k100 n50 At"), Some(7_840_000.0));
        assert_eq!(flops_of("train step flop16000000"), Some(16e6));
        assert_eq!(flops_of("whole run"), None);
        assert_eq!(flops_of("m3 k4"), None);
        // Words that merely start with m/k/n are not dimensions.
        assert_eq!(flops_of("mnist naive"), None);
    }

    #[test]
    fn times_read_well() {
        assert_eq!(human_time(850.0), "850 ns");
        assert_eq!(human_time(12_345.0), "12.3 µs");
        assert_eq!(human_time(4_560_000.0), "4.56 ms");
        assert_eq!(human_time(1.2e9), "1.20 s");
    }

    #[test]
    fn dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2000-03-01 is day 11 017 (30 years incl. 7 leap days = 10 957, + 31 + 29).
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // 2024-12-31: 54 years incl. 13 leap days = 19 723 days to 2024-01-01, + 365.
        assert_eq!(civil_from_days(20_088), (2024, 12, 31));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    fn write_result(dir: &Path, group: &str, function: &str, value: &str, median: f64) {
        let new = dir.join(group).join(function).join(value).join("new");
        fs::create_dir_all(&new).unwrap();
        fs::write(
            new.join("benchmark.json"),
            format!(
                r#"{{"group_id":"{group}","function_id":"{function}","value_str":"{value}","throughput":null,"full_id":"x","directory_name":"x","title":"x"}}"#
            ),
        )
        .unwrap();
        fs::write(
            new.join("estimates.json"),
            format!(
                r#"{{"mean":{{"point_estimate":1.0}},"median":{{"confidence_interval":{{"lower_bound":0.0}},"point_estimate":{median}}}}}"#
            ),
        )
        .unwrap();
        // Distinct modification times for the ordering.
        std::thread::sleep(Duration::from_millis(20));
    }

    #[test]
    fn results_are_collected_in_run_order_and_tabulated() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_result(&dir, "gemm", "naive", "old m1 k1 n1", 1.0);
        std::thread::sleep(Duration::from_millis(50));
        let since = SystemTime::now();
        // File times come from a coarse clock that can lag `now` by a tick.
        std::thread::sleep(Duration::from_millis(30));
        write_result(&dir, "gemm", "naive", "b m10 k10 n10", 1000.0);
        write_result(&dir, "gemm", "naive", "a m100 k10 n10", 2000.0);
        write_result(&dir, "gemm", "fast", "b m10 k10 n10", 100.0);
        write_result(&dir, "gemm", "fast", "a m100 k10 n10", 200.0);
        let rows = collect(&dir, since);
        let order: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.value.as_str(), r.function.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("b m10 k10 n10", "naive"),
                ("b m10 k10 n10", "fast"),
                ("a m100 k10 n10", "naive"),
                ("a m100 k10 n10", "fast"),
            ]
        );
        // 2·10·10·10 = 2000 flops in 100 ns = 20 GFLOP/s.
        assert_eq!(rows[1].gflops(), Some(20.0));
        let t = table(&rows);
        assert!(
            t.contains("| b m10 k10 n10  | fast    | 100 ns |    20.0 |"),
            "{t}"
        );
        assert!(t.lines().nth(1).unwrap().starts_with("| ---"), "{t}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

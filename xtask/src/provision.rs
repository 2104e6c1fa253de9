//! Making sure the machine has what CI needs: check each requirement, install what is missing.
//!
//! Requirements are data (see `REQUIREMENTS` in main.rs). Rust targets are added with rustup;
//! Debian packages are installed with apt-get when running as root, otherwise the exact command
//! is printed and the step fails.

use crate::run::{self, Failure};

/// Something the machine must have, how to tell and how to get it.
#[derive(Clone, Copy, Debug)]
pub enum Requirement {
    /// A rustup target (`rustup target add <name>`).
    RustTarget(&'static str),
    /// A Debian package and what it puts on the machine.
    Deb {
        /// The package to `apt-get install`.
        package: &'static str,
        /// What shows it is there without asking dpkg.
        provides: Provides,
    },
}

/// What a package puts on the machine, checked before asking dpkg (a hand-built library counts).
#[derive(Clone, Copy, Debug)]
pub enum Provides {
    /// A shared library the linker finds (`ldconfig -p` lists it), e.g. `libopenblas.so`.
    Library(&'static str),
    /// A program on `PATH`, e.g. `qemu-system-arm`.
    Program(&'static str),
}

impl Requirement {
    /// A short name for messages.
    pub fn name(&self) -> String {
        match self {
            Requirement::RustTarget(t) => format!("target {t}"),
            Requirement::Deb { package, .. } => (*package).to_string(),
        }
    }

    /// Whether the machine already has it.
    pub fn present(&self) -> bool {
        match self {
            Requirement::RustTarget(t) => rust_target_installed(t),
            Requirement::Deb { package, provides } => provides.present() || deb_installed(package),
        }
    }
}

impl Provides {
    /// Whether the library or program can be found.
    pub fn present(&self) -> bool {
        match self {
            Provides::Library(lib) => run::stdout_of(run::program("ldconfig").arg("-p"))
                .or_else(|| run::stdout_of(run::program("/sbin/ldconfig").arg("-p")))
                .is_some_and(|list| {
                    list.lines()
                        .any(|l| l.split_whitespace().next() == Some(lib))
                }),
            Provides::Program(p) => std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(p).is_file())),
        }
    }
}

fn deb_installed(package: &str) -> bool {
    run::stdout_of(
        run::program("dpkg-query")
            .args(["-W", "-f", "${Status}"])
            .arg(package),
    )
    .is_some_and(|s| s.trim() == "install ok installed")
}

fn rust_target_installed(target: &str) -> bool {
    if let Some(list) =
        run::stdout_of(run::program("rustup").args(["target", "list", "--installed"]))
    {
        return list.lines().any(|l| l.trim() == target);
    }
    // No rustup: a toolchain installed another way has the target's std in its sysroot.
    run::stdout_of(run::program("rustc").args(["--print", "sysroot"])).is_some_and(|root| {
        std::path::Path::new(root.trim())
            .join("lib/rustlib")
            .join(target)
            .is_dir()
    })
}

fn is_root() -> bool {
    run::stdout_of(run::program("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// apt-get's install command line, shared by the root path and the printed instruction.
const APT_INSTALL: &[&str] = &[
    "apt-get",
    "install",
    "-y",
    "--no-install-recommends",
    "-o",
    "DPkg::Lock::Timeout=300",
];

/// The shell line that installs `packages`, for a person to run as root.
fn apt_instruction(packages: &[&str]) -> String {
    format!(
        "apt-get update && {} {}",
        APT_INSTALL.join(" "),
        packages.join(" ")
    )
}

/// Checks every requirement and installs what is missing; the note lists what was installed.
pub fn provision(reqs: &[Requirement]) -> Result<Option<String>, Failure> {
    let missing: Vec<&Requirement> = reqs.iter().filter(|r| !r.present()).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let targets: Vec<&str> = missing
        .iter()
        .filter_map(|r| match r {
            Requirement::RustTarget(t) => Some(*t),
            Requirement::Deb { .. } => None,
        })
        .collect();
    let packages: Vec<&str> = missing
        .iter()
        .filter_map(|r| match r {
            Requirement::Deb { package, .. } => Some(*package),
            Requirement::RustTarget(_) => None,
        })
        .collect();

    if !packages.is_empty() {
        if !is_root() {
            return Err(Failure::msg(format!(
                "missing {}; as root, run: {}",
                packages.join(", "),
                apt_instruction(&packages)
            )));
        }
        let log = run::log_path("provision");
        run::logged(run::program("apt-get").arg("update"), &log)?;
        run::logged(
            run::program(APT_INSTALL[0])
                .args(&APT_INSTALL[1..])
                .args(&packages),
            &log,
        )?;
    }
    if !targets.is_empty() {
        let log = run::log_path("provision-rustup");
        run::logged(
            run::program("rustup")
                .args(["target", "add"])
                .args(&targets),
            &log,
        )?;
    }
    let still: Vec<String> = missing
        .iter()
        .filter(|r| !r.present())
        .map(|r| r.name())
        .collect();
    if !still.is_empty() {
        return Err(Failure::msg(format!(
            "still missing after installing: {}",
            still.join(", ")
        )));
    }
    let names: Vec<String> = missing.iter().map(|r| r.name()).collect();
    Ok(Some(format!("installed {}", names.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_target_and_shell_are_found() {
        // Whatever built this test has its own host target and a shell on PATH.
        let host = run::stdout_of(run::program("rustc").arg("-vV"))
            .and_then(|v| {
                v.lines()
                    .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
            })
            .unwrap();
        let host: &'static str = Box::leak(host.into_boxed_str());
        assert!(Requirement::RustTarget(host).present());
        assert!(Provides::Program("sh").present());
    }

    #[test]
    fn made_up_things_are_missing() {
        assert!(!Requirement::RustTarget("no-such-target-xtask").present());
        assert!(!Provides::Program("no-such-program-xtask").present());
        assert!(!Provides::Library("libno-such-library-xtask.so").present());
        let deb = Requirement::Deb {
            package: "no-such-package-xtask",
            provides: Provides::Program("no-such-program-xtask"),
        };
        assert!(!deb.present());
        assert_eq!(deb.name(), "no-such-package-xtask");
    }

    #[test]
    fn the_printed_instruction_is_the_apt_line() {
        assert_eq!(
            apt_instruction(&["libopenblas-dev", "qemu-system-arm"]),
            "apt-get update && apt-get install -y --no-install-recommends \
             -o DPkg::Lock::Timeout=300 libopenblas-dev qemu-system-arm"
        );
    }

    #[test]
    fn nothing_missing_installs_nothing() {
        let have = [Requirement::Deb {
            package: "no-such-package-xtask",
            provides: Provides::Program("sh"),
        }];
        assert!(provision(&have).unwrap().is_none());
    }
}

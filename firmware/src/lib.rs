//! Board support for manabi's firmware on QEMU: semihosting I/O, exit status, faults, counters.
//!
//! Four programs use it (`src/bin`), each run by `cargo xtask embedded`:
//! - `smoke`: XOR and three Gaussian blobs trained with the library's layers and optimizers
//!   (Cortex-M4F on `mps2-an386`, and Cortex-M0 on `microbit` with 16 KiB of RAM);
//! - `mnist-train`: the book's 784-50-10 network initialised and trained on the device with
//!   fused SGD on sparse rows of the pixels, streaming MNIST from the host's files, then
//!   evaluated on the test set;
//! - `cnn-train`: a small convolutional network (conv 8@5×5, max-pool, affine 10) initialised
//!   and trained on the device for a few epochs the same way, scored after each;
//! - `mnist-infer`: weights trained on the host by `manabi train`, embedded in flash,
//!   evaluated on the test set; its confusion matrix must equal `manabi eval --backend naive`.
//!
//! No program links an allocator: memory is the `static` arenas their plans size at compile
//! time, each a zeroed `static_cell::ConstStaticCell` in .bss handed out once as
//! `&'static mut`, and the stack. What they share, from here:
//! - [`println!`] and [`exit`] through semihosting; a panic or a HardFault prints what happened
//!   and exits with failure, so a broken run never hangs CI;
//! - [`HostFile`]: host files opened and read through semihosting (SYS_OPEN, SYS_READ);
//! - [`Args`]: the command line QEMU passes (`-append "key=value ..."`);
//! - [`Clock`]: guest instructions counted with SysTick (exact under `-icount shift=0`);
//! - [`stack_usage`]: the stack's high-water mark (cortex-m-rt paints the stack at reset);
//! - [`Fixed`]: decimals printed without the float formatting machinery;
//! - [`digest`]: the weights' FNV-1a, which `cargo xtask embedded` compares with pinned values.
#![no_std]

pub mod cnn;
pub mod idx;
pub mod mnist;

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{ExceptionFrame, exception};
use cortex_m_semihosting::{debug, nr, syscall1};
use manabi_layers::{
    Batch, Moment, Network, OneNetwork, Plan, PlanConfig, Shape, Spec, Stepper, Stop, Training,
    Update,
};
use manabi_matmul::Gemm;
use manabi_optim::Optimizer;

pub use cortex_m_semihosting::hprintln as println;

/// FNV-1a (64-bit) over a net's parameters (their f32 bits, little-endian): equal digests mean
/// equal weights bit for bit. Every training program prints one as a `metric` line; the
/// function lives in [`cnn`] because the host's twin of `cnn-train` compiles that file too.
pub use cnn::digest;

/// The board this build runs on, as QEMU names the machine.
#[cfg(board = "mps2-an386")]
pub const BOARD: &str = "mps2-an386 (Cortex-M4F)";
/// The board this build runs on, as QEMU names the machine.
#[cfg(board = "microbit")]
pub const BOARD: &str = "microbit (Cortex-M0)";

/// Guest instructions per SysTick tick, times two, under `-icount shift=0` (one instruction
/// per nanosecond of virtual time): SysTick counts the 25 MHz MPS2 system clock (40 per tick)
/// or the 16 MHz nRF51 clock (62.5 per tick).
#[cfg(board = "mps2-an386")]
const TWICE_INSTRUCTIONS_PER_TICK: u64 = 80;
#[cfg(board = "microbit")]
const TWICE_INSTRUCTIONS_PER_TICK: u64 = 125;

/// A program's plan, made at compile time: a network on `input` with `layers`, one batch size
/// for training and evaluation. An invalid configuration panics, which in a `static` fails the
/// build.
pub const fn plan(input: Shape, layers: &[Spec], batch: usize, training: Training) -> Plan {
    match Plan::new(&PlanConfig {
        input,
        layers,
        batch,
        eval_batch: batch,
        training,
    }) {
        Ok(p) => p,
        Err(_) => panic!("the program's plan is invalid"),
    }
}

/// A program's start: SysTick counting guest instructions, and the command line.
pub fn start() -> (Clock, Args) {
    let Some(core) = cortex_m::Peripherals::take() else {
        fail(format_args!("core peripherals taken twice"))
    };
    (Clock::start(core.SYST), Args::get())
}

/// A program's end: QEMU exits with success, or prints the error and fails.
pub fn finish(result: Result<(), Error>) -> ! {
    match result {
        Ok(()) => exit(true),
        Err(e) => fail(format_args!("{e}")),
    }
}

/// Prints what a program's network takes: `name on BOARD: arena … bytes (… parameters, …
/// activation values[, … scratch]), batch …`.
pub fn print_plan(name: &str, plan: &Plan) {
    let (params, _, _, activations) = plan.breakdown();
    let scratch = plan.scratch_len();
    println!(
        "{} on {}: arena {} bytes ({} parameters, {} activation values{}{}), batch {}",
        name,
        BOARD,
        plan.bytes::<f32>(),
        params,
        activations,
        if scratch > 0 { ", scratch " } else { "" },
        Blank(scratch),
        plan.batch()
    );
}

/// A count, printed unless it is zero.
struct Blank(usize);

impl fmt::Display for Blank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// What an observer of an f32 run sees at one of its moments.
pub type At<'m, 'n, S> = Moment<'m, 'n, f32, S>;

/// Ends the program: QEMU exits with status 0 on success and 1 on failure.
pub fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached if a debugger resumes the core.
    loop {
        cortex_m::asm::nop();
    }
}

/// Prints the message and exits with failure.
pub fn fail(what: fmt::Arguments<'_>) -> ! {
    cortex_m_semihosting::heprintln!("FAILED: {}", what);
    exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cortex_m::interrupt::disable();
    cortex_m_semihosting::heprintln!("panicked: {}", info);
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    cortex_m_semihosting::heprintln!(
        "HardFault: pc {:#010x}, lr {:#010x}",
        frame.pc(),
        frame.lr()
    );
    exit(false)
}

/// What can go wrong talking to the host or reading its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The directory and file name do not fit the path buffer.
    PathTooLong {
        /// The file asked for.
        name: &'static str,
    },
    /// The host could not open the file.
    Open {
        /// The file asked for.
        name: &'static str,
    },
    /// A read or seek failed or the file ended early.
    Read {
        /// The file being read.
        name: &'static str,
    },
    /// An IDX header that is not what the file should hold.
    Idx {
        /// The file being read.
        name: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// A command-line value that does not parse.
    Arg {
        /// The key, as in `key=value`.
        key: &'static str,
    },
    /// The library refused a plan or an arena.
    Plan(manabi_tensor::Error),
    /// Training diverged after this iteration: a loss or a weight is not finite.
    Diverged {
        /// The iteration (from 1).
        iteration: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PathTooLong { name } => write!(f, "path to {name} too long"),
            Error::Open { name } => write!(f, "the host cannot open {name}"),
            Error::Read { name } => write!(f, "reading {name} failed or it ended early"),
            Error::Idx { name, what } => write!(f, "{name}: {what}"),
            Error::Arg { key } => write!(f, "command line: bad value for {key}="),
            Error::Plan(e) => write!(f, "plan: {e}"),
            Error::Diverged { iteration } => {
                write!(f, "training diverged at iteration {iteration}")
            }
        }
    }
}

impl core::error::Error for Error {}

impl From<manabi_tensor::Error> for Error {
    fn from(e: manabi_tensor::Error) -> Self {
        Error::Plan(e)
    }
}

impl From<Stop<f32, Error>> for Error {
    fn from(stop: Stop<f32, Error>) -> Self {
        match stop {
            Stop::Failed(e) => e,
            Stop::Diverged { iteration, .. } => Error::Diverged { iteration },
        }
    }
}

/// The library's one-network step ([`OneNetwork`]), counting the guest instructions each
/// [`Network::train_step`] takes.
pub struct TimedStep<'c> {
    clock: &'c Clock,
    /// Instructions of every step so far.
    pub instructions: u64,
}

impl<'c> TimedStep<'c> {
    /// Counts on `clock`, from zero.
    pub fn new(clock: &'c Clock) -> Self {
        Self {
            clock,
            instructions: 0,
        }
    }
}

impl<G: Gemm<f32>, O: Optimizer<f32>> Stepper<f32, G, O, Error> for TimedStep<'_> {
    fn step(
        &mut self,
        net: &mut Network<'_, f32>,
        mm: &G,
        batch: Batch<'_, f32>,
        update: &mut Update<'_, f32, O>,
    ) -> Result<f32, Error> {
        let start = self.clock.instructions();
        let loss = Stepper::<f32, G, O, Error>::step(&mut OneNetwork, net, mm, batch, update)?;
        self.instructions += self.clock.instructions() - start;
        Ok(loss)
    }
}

/// A host file open for reading through semihosting; closed on drop.
#[derive(Debug)]
pub struct HostFile {
    fd: usize,
    name: &'static str,
}

/// Longest `dir/name` path, NUL included.
const PATH_MAX: usize = 512;

impl HostFile {
    /// Opens `dir/name` (`name` alone if `dir` is empty) in binary read mode; relative paths
    /// are relative to QEMU's working directory.
    pub fn open(dir: &str, name: &'static str) -> Result<Self, Error> {
        let mut path = [0u8; PATH_MAX];
        let mut len = 0;
        let sep: &[u8] = if dir.is_empty() || dir.ends_with('/') {
            b""
        } else {
            b"/"
        };
        for part in [dir.as_bytes(), sep, name.as_bytes()] {
            let end = len + part.len();
            if end >= PATH_MAX {
                return Err(Error::PathTooLong { name });
            }
            path[len..end].copy_from_slice(part);
            len = end;
        }
        // SYS_OPEN: [path (NUL-terminated), mode, length without the NUL] -> handle or -1.
        let block = [path.as_ptr() as usize, nr::open::R_BINARY, len];
        // SAFETY: the block and the path it points to outlive the call; the host only reads them.
        let fd = unsafe { syscall1(nr::OPEN, block.as_ptr() as usize) };
        if fd as isize == -1 {
            return Err(Error::Open { name });
        }
        Ok(Self { fd, name })
    }

    /// The file's length in bytes.
    pub fn len(&self) -> Result<usize, Error> {
        let block = [self.fd];
        // SAFETY: SYS_FLEN reads the one-word block.
        let n = unsafe { syscall1(nr::FLEN, block.as_ptr() as usize) };
        if n as isize == -1 {
            return Err(Error::Read { name: self.name });
        }
        Ok(n)
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> Result<bool, Error> {
        self.len().map(|n| n == 0)
    }

    /// Fills `buf` from the current position; an early end of file is an error.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let mut done = 0;
        while done < buf.len() {
            let want = buf.len() - done;
            // SYS_READ: [handle, buffer, length] -> bytes *not* read (0 when all were).
            let block = [self.fd, buf[done..].as_mut_ptr() as usize, want];
            // SAFETY: the host writes at most `want` bytes into `buf[done..]`, which we own
            // mutably for the duration of the call.
            let left = unsafe { syscall1(nr::READ, block.as_ptr() as usize) };
            if left >= want {
                return Err(Error::Read { name: self.name });
            }
            done += want - left;
        }
        Ok(())
    }

    /// Moves to byte `pos` from the start.
    pub fn seek(&mut self, pos: usize) -> Result<(), Error> {
        let block = [self.fd, pos];
        // SAFETY: SYS_SEEK reads the two-word block.
        let r = unsafe { syscall1(nr::SEEK, block.as_ptr() as usize) };
        if r != 0 {
            return Err(Error::Read { name: self.name });
        }
        Ok(())
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        let block = [self.fd];
        // SAFETY: SYS_CLOSE reads the one-word block; the handle is not used again.
        unsafe {
            syscall1(nr::CLOSE, block.as_ptr() as usize);
        }
    }
}

/// The command line QEMU gives the program: with `-append "a=1 b"`, QEMU reports the kernel's
/// file name followed by `a=1 b`. Words are separated by spaces; the first (the file) is skipped.
#[derive(Debug)]
pub struct Args {
    buf: [u8; 512],
    len: usize,
}

impl Args {
    /// Asks the host for the command line (empty if it has none or it does not fit).
    pub fn get() -> Self {
        let mut args = Args {
            buf: [0; 512],
            len: 0,
        };
        // SYS_GET_CMDLINE: [buffer, size] in; the host writes the line (NUL-terminated) and
        // stores its length in the second word.
        let mut block = [args.buf.as_mut_ptr() as usize, args.buf.len()];
        // SAFETY: the host writes at most `size` bytes into `buf` and one word into `block`,
        // both owned here and alive for the call.
        let r = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
        // Read the block back through a volatile load: the host wrote it behind the compiler.
        // SAFETY: `block` is a live local array.
        let len = unsafe { core::ptr::read_volatile(&block[1]) };
        if r == 0 && len < args.buf.len() && core::str::from_utf8(&args.buf[..len]).is_ok() {
            args.len = len;
        }
        args
    }

    /// The words after the program's file name.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        core::str::from_utf8(&self.buf[..self.len])
            .unwrap_or("")
            .split(' ')
            .filter(|w| !w.is_empty())
            .skip(1)
    }

    /// Whether `word` appears on its own.
    pub fn has(&self, word: &str) -> bool {
        self.words().any(|w| w == word)
    }

    /// The value of `key=value`, the last one if repeated.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.words()
            .filter_map(|w| w.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .last()
    }

    /// The parsed value of `key=value`, or `default` when absent.
    pub fn parse<T: core::str::FromStr>(&self, key: &'static str, default: T) -> Result<T, Error> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::Arg { key }),
        }
    }
}

/// SysTick wraps since [`Clock::start`]; only the SysTick handler writes it.
static WRAPS: AtomicU32 = AtomicU32::new(0);

/// The SysTick reload value: the 24-bit counter's full range.
const RELOAD: u32 = 0x00FF_FFFF;

#[exception]
fn SysTick() {
    // Load and store, not fetch_add: Cortex-M0 has no atomic read-modify-write, and this
    // handler is the only writer.
    WRAPS.store(WRAPS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Counts guest instructions with SysTick, which under `-icount shift=0` runs in lockstep with
/// them; the counter wraps every 2^24 ticks and the interrupt counts the wraps.
pub struct Clock {
    _syst: SYST,
}

impl Clock {
    /// Starts SysTick on the core clock, counting down from its largest reload.
    pub fn start(mut syst: SYST) -> Self {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Clock { _syst: syst }
    }

    /// Ticks since [`Clock::start`].
    pub fn ticks(&self) -> u64 {
        loop {
            let wraps = WRAPS.load(Ordering::Relaxed);
            let current = SYST::get_current();
            if WRAPS.load(Ordering::Relaxed) == wraps {
                return u64::from(wraps) * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current);
            }
        }
    }

    /// Guest instructions since [`Clock::start`].
    pub fn instructions(&self) -> u64 {
        self.ticks() * TWICE_INSTRUCTIONS_PER_TICK / 2
    }
}

/// The word cortex-m-rt's `paint-stack` writes over the stack at reset.
const PAINT: u32 = 0xCCCC_CCCC;

/// How much of the stack has been used so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackUsage {
    /// Bytes between the top of RAM and the deepest word written since reset.
    pub peak: usize,
    /// Bytes between the end of the statics and the top of RAM.
    pub size: usize,
}

/// The stack's high-water mark: the painted region is scanned from its bottom (the end of the
/// statics) up to the first word that is no longer the paint.
pub fn stack_usage() -> StackUsage {
    unsafe extern "C" {
        static _stack_end: u32;
        static _stack_start: u32;
    }
    // Only the symbols' addresses are used (the linker script defines them).
    let bottom = &raw const _stack_end as usize;
    let top = &raw const _stack_start as usize;
    let mut p = bottom;
    // SAFETY: every word in [bottom, top) is RAM the stack may use; reading it is harmless.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    StackUsage {
        peak: top - p,
        size: top - bottom,
    }
}

/// `value` with `decimals` digits after the point, printed with integer arithmetic (float
/// formatting would cost about 25 KB of flash).
#[derive(Clone, Copy, Debug)]
pub struct Fixed(pub f32, pub u32);

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fixed(v, decimals) = *self;
        if !v.is_finite() {
            return f.write_str(if v.is_nan() { "NaN" } else { "inf" });
        }
        let scale = 10u64.pow(decimals);
        let scaled = libm_round(v.abs() * scale as f32);
        if scaled >= u64::MAX as f32 {
            return f.write_str("huge");
        }
        let n = scaled as u64;
        let sign = if v < 0.0 && n != 0 { "-" } else { "" };
        if decimals == 0 {
            write!(f, "{sign}{n}")
        } else {
            let d = decimals as usize;
            write!(f, "{sign}{}.{:0d$}", n / scale, n % scale)
        }
    }
}

/// Round half away from zero for non-negative `x` (core has no `round` without std).
fn libm_round(x: f32) -> f32 {
    let t = x as u64 as f32;
    if x - t >= 0.5 { t + 1.0 } else { t }
}

/// A percentage `part/whole` with two decimals, printed with integers only.
#[derive(Clone, Copy, Debug)]
pub struct Percent(pub u32, pub u32);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Percent(part, whole) = *self;
        if whole == 0 {
            return f.write_str("n/a");
        }
        let hundredths = (u64::from(part) * 10_000 + u64::from(whole) / 2) / u64::from(whole);
        write!(f, "{}.{:02} %", hundredths / 100, hundredths % 100)
    }
}

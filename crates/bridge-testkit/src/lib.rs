//! `bridge-testkit`: what the tests and benchmarks of mcp-bridge share.
//!
//! * [`report`]: the lines benchmarks print: the machine, latency
//!   percentiles, rates, memory.
//! * [`process`]: whether a process is alive, killing it, its memory, read
//!   from `/proc` (Linux).
//!
//! Only `std`: `bridge-core`'s own benchmarks use it, so it must not depend
//! on `bridge-core`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod process;
pub mod report;

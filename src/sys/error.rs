//! [`SysError`], the errno-carrying error of the system calls cpusets make (affinity,
//! NUMA policy), the same on every implementation of `sys`.

use core::fmt;

use super::errno as E;

/// A system call that failed, with its `errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysError {
    /// The call, as `"mbind"`.
    pub call: &'static str,
    /// The `errno` it set.
    pub errno: i32,
}

impl SysError {
    /// The error `errno` of `call`.
    pub fn new(call: &'static str, errno: i32) -> Self {
        Self { call, errno }
    }

    /// The error of `call` from the calling thread's `errno`.
    pub fn last(call: &'static str) -> Self {
        Self {
            call,
            errno: E::get(),
        }
    }

    /// The symbolic name of the errno, as `"EINVAL"` (`"E?"` for ones cpusets never see).
    pub fn name(&self) -> &'static str {
        match self.errno {
            E::EPERM => "EPERM",
            E::ESRCH => "ESRCH",
            E::EFAULT => "EFAULT",
            E::EINVAL => "EINVAL",
            E::ENOMEM => "ENOMEM",
            E::EIO => "EIO",
            E::ENOSYS => "ENOSYS",
            E::EXDEV => "EXDEV",
            E::EBUSY => "EBUSY",
            E::ENOSPC => "ENOSPC",
            E::EACCES => "EACCES",
            _ => "E?",
        }
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.errno {
            E::EINVAL => "invalid argument (a CPU or node the process may not use?)",
            E::EPERM => "operation not permitted",
            E::ESRCH => "no such thread",
            E::EFAULT => "bad address",
            E::ENOMEM => "out of memory",
            E::EIO => "pages could not be moved",
            E::ENOSYS => "not supported by this kernel",
            _ => "failed",
        };
        write!(
            f,
            "{} failed: {} ({}, errno {})",
            self.call,
            why,
            self.name(),
            self.errno
        )
    }
}

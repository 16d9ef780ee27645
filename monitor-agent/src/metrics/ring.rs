//! How full the kernel ring buffer is, read without disturbing its reader.
//!
//! A BPF ring buffer map exposes two positions to user space by `mmap`: the consumer position
//! (first page) and the producer position (second page). Their difference is the number of bytes
//! written but not yet consumed, which is what libbpf's `ring_buffer__avail_data_size` reports.
//! aya's `RingBuf` keeps its own mappings private, so we map the same two pages once more,
//! read-only (the kernel allows read-only mappings of any part of the map): reading them is two
//! atomic loads, on scrape, and never touches the reader thread. The mapping holds a reference
//! to the map, so it stays valid after the reader is gone.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// A read-only view of a ring buffer's consumer and producer positions.
#[derive(Debug)]
pub struct RingFill {
    base: NonNull<u8>,
    page: usize,
    capacity: u64,
}

// SAFETY: the mapping is read-only shared memory that lives as long as the value; it is only
// read with atomic loads, which are sound from any thread.
unsafe impl Send for RingFill {}
// SAFETY: as above: no `&mut` access exists, reads are atomic.
unsafe impl Sync for RingFill {}

impl RingFill {
    /// Maps the position pages of the ring buffer map `fd`, of `capacity` data bytes.
    pub fn new(fd: BorrowedFd<'_>, capacity: u32) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).map_err(|_| std::io::Error::last_os_error())?;
        // SAFETY: a fresh read-only shared mapping of two pages of a ring buffer map; the kernel
        // validates the size and offset against the map. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(RingFill {
            base,
            page,
            capacity: u64::from(capacity),
        })
    }

    fn position(&self, page: usize) -> u64 {
        // SAFETY: `page` is 0 or 1, inside the two mapped pages; each position is an aligned
        // u64 at the start of its page that the kernel and the consumer update atomically.
        let pos = unsafe { &*self.base.as_ptr().add(page * self.page).cast::<AtomicU64>() };
        pos.load(Ordering::Acquire)
    }

    /// Bytes written by the kernel and not yet consumed (record headers included).
    pub fn pending_bytes(&self) -> u64 {
        let consumer = self.position(0);
        let producer = self.position(1);
        producer.saturating_sub(consumer).min(self.capacity)
    }

    /// Bytes the kernel has written since the map was created (record headers included): the
    /// producer position only ever grows.
    pub fn written_bytes(&self) -> u64 {
        self.position(1)
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// `pending_bytes / capacity`, between 0 and 1.
    pub fn fill_ratio(&self) -> f64 {
        if self.capacity == 0 {
            return 0.0;
        }
        self.pending_bytes() as f64 / self.capacity as f64
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`, once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), 2 * self.page) };
    }
}

//! HTTP over a Unix socket: a ureq connector that carries requests over a `UnixStream`
//! instead of TCP. Used by the Consul client (`CONSUL_HTTP_ADDR=unix:///path`) and by the
//! control client (`pilot status`, `reload`, ... talk to pilot's socket). It uses ureq's
//! `unversioned` transport API, so a ureq upgrade may need this file touched.
//!
//! Each connection registers a shutdown handle with its agent, so `ureq::Agent::shutdown`
//! interrupts a request blocked on the socket (a Consul watch of a replaced config).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};

#[derive(Debug)]
pub struct UnixConnector(pub PathBuf);

impl<In: Transport> Connector<In> for UnixConnector {
    type Out = UnixTransport;

    fn connect(&self, details: &ConnectionDetails, _chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        let stream = Arc::new(Socket(UnixStream::connect(&self.0)?));
        (details.register_shutdown)(Arc::downgrade(&stream) as std::sync::Weak<dyn ShutdownHandle>)?;
        let buffers = LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(UnixTransport { stream, buffers }))
    }
}

/// The connection, shared (weakly) with the agent so its shutdown can interrupt it.
#[derive(Debug)]
struct Socket(UnixStream);

impl ShutdownHandle for Socket {
    fn shutdown(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug)]
pub struct UnixTransport {
    stream: Arc<Socket>,
    buffers: LazyBuffers,
}

fn timed_out(e: std::io::Error, t: &NextTimeout) -> ureq::Error {
    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
        ureq::Error::Timeout(t.reason)
    } else {
        e.into()
    }
}

impl Transport for UnixTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream.0.set_write_timeout(timeout.not_zero().map(|d| *d))?;
        let output = &self.buffers.output()[..amount];
        (&self.stream.0).write_all(output).map_err(|e| timed_out(e, &timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        self.stream.0.set_read_timeout(timeout.not_zero().map(|d| *d))?;
        let n = loop {
            match (&self.stream.0).read(self.buffers.input_append_buf()) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| timed_out(e, &timeout))?,
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    /// A pooled connection is reusable if the agent has neither closed it nor sent bytes
    /// we did not ask for.
    fn is_open(&mut self) -> bool {
        let stream = &self.stream.0;
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut buf = [0u8];
        let open = matches!((&*stream).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        open && stream.set_nonblocking(false).is_ok()
    }
}

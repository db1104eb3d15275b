//! The interpreter side: one thread per engine runs an asyncio loop with every handler call on
//! it, a watchdog thread interrupts what overruns, and the Python API (`smscd` / `siphon.smpp`).
//!
//! Jobs come from tokio tasks through a mutex-guarded queue; a byte on a pipe wakes the loop (the
//! pipe's read end is a reader of the loop, so waiting costs nothing), and only the first job of
//! a batch writes it. Answers go back on oneshot channels. Nothing outside this thread takes the
//! GIL except the watchdog, and only to raise `HandlerTimeout`.
//!
//! Timeouts: the thread marks "busy since" when it starts a sync call, an import, or a loop
//! iteration (the loop's selector is wrapped to mark idle while it waits); the watchdog raises
//! `HandlerTimeout` (a BaseException, so `except Exception` in a script does not swallow it) into
//! the thread with `PyThreadState_SetAsyncExc` when a mark is older than its limit. That stops
//! pure Python code (`while True: pass`), which holds the GIL and could not be stopped any other
//! way; code blocked in C (`time.sleep`) is not interruptible this way, and is covered by the
//! caller's own timeout. Async handlers are also cancelled by a loop timer at `timeout_ms`.
//!
//! Async handlers start eagerly (PRELUDE's `start`, what 3.12's eager tasks do): the Task's
//! first step runs inside the job's own batch, timed like a sync call, so a handler that never
//! suspends (returns at once, or awaits only the memory cache) is answered with no loop
//! iteration, timer or done callback; only one that suspends gets those.

use super::cache::{Cache, CacheValue, Op};
use super::{BindInfo, BindVerdict, Failure, FailureKind, Hook, PduVerdict, ReceiptMatch, SessionView};
use crate::router::Target;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyModule};
use smpp::text::DataCoding;
use smpp::{CommandStatus, SubmitSm, Tag};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pyo3::create_exception!(
    smscd,
    HandlerTimeout,
    pyo3::exceptions::PyBaseException,
    "Raised in a handler that ran past handlers.timeout_ms (or an import past import_timeout_ms)."
);

/// Runs on the engine's thread when the loop wakes: helpers compiled once per thread.
const PRELUDE: &str = r#"
import asyncio, selectors, traceback, types
import smscd as _m

class Selector(selectors.DefaultSelector):
    # Marks the thread idle while the loop waits, so the watchdog times only work.
    def select(self, timeout=None):
        _m._loop_idle()
        try:
            return super().select(timeout)
        finally:
            _m._loop_busy()

def new_loop():
    loop = asyncio.SelectorEventLoop(Selector())
    asyncio.set_event_loop(loop)
    return loop

def where(exc, tb=None):
    name = type(exc).__name__
    if isinstance(exc, SyntaxError):
        return f"{exc.filename}:{exc.lineno}: {name}: {exc.msg}"
    frames = traceback.extract_tb(tb or exc.__traceback__)
    if frames:
        f = frames[-1]
        return f"{f.filename}:{f.lineno}: {name}: {exc}"
    return f"{name}: {exc}"

CoroutineType = types.CoroutineType

def start(loop, coro):
    # The coroutine's Task, with its first step run now, as 3.12's eager tasks do: create_task
    # schedules the step through loop.call_soon, which is caught here and called at once, inside
    # the Task (current_task(), asyncio.timeout() and contextvars behave as usual). A handler that
    # never suspends is done on return: no loop iteration, timer or done callback for it.
    box = []
    loop.call_soon = lambda cb, *args, context=None: box.append((cb, args, context))
    try:
        task = loop.create_task(coro)
    finally:
        del loop.call_soon
    for cb, args, context in box:
        if context is None:
            cb(*args)
        else:
            context.run(cb, *args)
    return task
"#;

/// What the engine thread is asked to do. Nearly every job is a `Pdu`, so the queue holds them
/// by value: boxing the large variant would only add an allocation per call.
#[allow(clippy::large_enum_variant)]
enum Job {
    Bind {
        info: BindInfo,
        deadline: Instant,
        timeout: Duration,
        tx: oneshot::Sender<Result<BindVerdict, Failure>>,
    },
    Pdu {
        hook: Hook,
        sm: SubmitSm,
        session: SessionView,
        matched: Option<ReceiptMatch>,
        deadline: Instant,
        timeout: Duration,
        tx: oneshot::Sender<Result<PduVerdict, Failure>>,
    },
    Load {
        path: PathBuf,
        source: Vec<u8>,
        limit: Duration,
        tx: oneshot::Sender<Result<(), String>>,
    },
    CacheDone {
        fut: Py<PyAny>,
        result: Result<CacheValue, String>,
    },
    Stop,
}

/// State shared between callers, the engine thread and the watchdog.
struct Shared {
    queue: Mutex<VecDeque<Job>>,
    /// A wake-up byte is in the pipe (or about to be): later jobs need not write one.
    armed: AtomicBool,
    wake: OwnedFd,
    alive: AtomicBool,
    epoch: Instant,
    /// Start of the current busy segment in ns since `epoch` (+1), 0 while idle.
    seg_start: AtomicU64,
    seg_limit: AtomicU64,
    seg_id: AtomicU64,
    /// The segment the watchdog raised HandlerTimeout in.
    interrupted: AtomicU64,
    /// A loop iteration's limit: the latest call's timeout.
    loop_limit: AtomicU64,
    thread_ident: AtomicU64,
    flags: Arc<AtomicU8>,
    cache: Arc<Cache>,
    rt: tokio::runtime::Handle,
}

impl Shared {
    fn push(&self, job: Job) -> bool {
        if !self.alive.load(Ordering::Acquire) {
            return false;
        }
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(job);
        if !self.armed.swap(true, Ordering::AcqRel) {
            let b = [1u8];
            // SAFETY: writing one byte from a live buffer to our own pipe's write end.
            let _ = unsafe { libc::write(self.wake.as_raw_fd(), b.as_ptr().cast(), 1) };
        }
        true
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    fn begin(&self, limit: Duration) -> u64 {
        let id = self.seg_id.fetch_add(1, Ordering::AcqRel) + 1;
        self.seg_limit.store(limit.as_nanos() as u64, Ordering::Release);
        self.seg_start.store(self.now_ns(), Ordering::Release);
        id
    }
}

/// The engine's handle, held by [`super::Handlers`].
pub(super) struct Engine {
    shared: Arc<Shared>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

fn failure(kind: FailureKind, detail: impl Into<String>) -> Failure {
    Failure { kind, detail: detail.into() }
}

/// How long the caller waits past `timeout` for the engine's own timeout to answer.
fn grace(timeout: Duration) -> Duration {
    (timeout / 2).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

impl Engine {
    /// Start the engine thread (the interpreter is initialised on first use) and its watchdog.
    pub(super) fn spawn(flags: Arc<AtomicU8>, cache: Cache) -> Result<Engine, String> {
        let rt = tokio::runtime::Handle::try_current().map_err(|e| format!("no tokio runtime: {e}"))?;
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(format!("cannot make the wake-up pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors are fresh from pipe2 and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            armed: AtomicBool::new(false),
            wake: write,
            alive: AtomicBool::new(true),
            epoch: Instant::now(),
            seg_start: AtomicU64::new(0),
            seg_limit: AtomicU64::new(u64::MAX),
            seg_id: AtomicU64::new(0),
            interrupted: AtomicU64::new(0),
            loop_limit: AtomicU64::new(Duration::from_millis(100).as_nanos() as u64),
            thread_ident: AtomicU64::new(0),
            flags,
            cache: Arc::new(cache),
            rt,
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("smscd-python".into())
            .spawn(move || thread_main(s, read, ready_tx))
            .map_err(|e| format!("cannot start the Python thread: {e}"))?;
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("Python did not start: {e}")),
            Err(_) => return Err("Python did not start within 30 s".into()),
        }
        let s = shared.clone();
        std::thread::Builder::new()
            .name("smscd-py-watchdog".into())
            .spawn(move || watchdog(s))
            .map_err(|e| format!("cannot start the handler watchdog: {e}"))?;
        Ok(Engine { shared })
    }

    pub(super) fn stop(&self) {
        self.shared.push(Job::Stop);
        self.shared.alive.store(false, Ordering::Release);
    }

    pub(super) async fn load(&self, path: &Path, source: Vec<u8>, limit: Duration) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if !self.shared.push(Job::Load { path: path.to_path_buf(), source, limit, tx }) {
            return Err("the Python thread has stopped".into());
        }
        match tokio::time::timeout(limit + grace(limit), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the Python thread has stopped".into()),
            Err(_) => Err(format!(
                "{}: import did not finish within import_timeout_ms ({} ms) and is blocked outside Python code",
                path.display(),
                limit.as_millis()
            )),
        }
    }

    pub(super) async fn call_bind(&self, info: BindInfo, timeout: Duration) -> Result<BindVerdict, Failure> {
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        if !self.shared.push(Job::Bind { info, deadline, timeout, tx }) {
            return Err(failure(FailureKind::Unavailable, "the Python thread has stopped"));
        }
        answer(rx, timeout).await
    }

    pub(super) async fn call_pdu(
        &self,
        hook: Hook,
        sm: SubmitSm,
        session: SessionView,
        matched: Option<ReceiptMatch>,
        timeout: Duration,
    ) -> Result<PduVerdict, Failure> {
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        if !self.shared.push(Job::Pdu { hook, sm, session, matched, deadline, timeout, tx }) {
            return Err(failure(FailureKind::Unavailable, "the Python thread has stopped"));
        }
        answer(rx, timeout).await
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, Failure>>, timeout: Duration) -> Result<T, Failure> {
    match tokio::time::timeout(timeout + grace(timeout), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(failure(FailureKind::Unavailable, "the Python thread has stopped")),
        Err(_) => Err(failure(
            FailureKind::Timeout,
            format!(
                "no answer within timeout_ms ({} ms): the handler is blocked outside Python code",
                timeout.as_millis()
            ),
        )),
    }
}

fn watchdog(shared: Arc<Shared>) {
    while shared.alive.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
        let start = shared.seg_start.load(Ordering::Acquire);
        if start == 0 {
            continue;
        }
        let id = shared.seg_id.load(Ordering::Acquire);
        let limit = shared.seg_limit.load(Ordering::Acquire);
        if shared.now_ns().saturating_sub(start) < limit || shared.interrupted.load(Ordering::Acquire) == id {
            continue;
        }
        Python::with_gil(|py| {
            // The engine thread is paused at a bytecode boundary now: if it is still in the same
            // segment, the exception lands in the code that overran.
            if shared.seg_id.load(Ordering::Acquire) != id || shared.seg_start.load(Ordering::Acquire) == 0 {
                return;
            }
            let tid = shared.thread_ident.load(Ordering::Acquire);
            let exc = py.get_type::<HandlerTimeout>();
            // SAFETY: GIL held; a thread id and a live exception type.
            unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(tid as std::os::raw::c_long, exc.as_ptr()) };
            shared.interrupted.store(id, Ordering::Release);
        });
    }
}

// ---- the engine thread --------------------------------------------------------------------------

#[derive(Default)]
struct Registry {
    on_bind: Option<Py<PyAny>>,
    on_pdu: Vec<(Hook, Py<PyAny>)>,
}

impl Registry {
    fn bits(&self) -> u8 {
        let mut b = if self.on_bind.is_some() { Hook::Bind.bit() } else { 0 };
        for (h, _) in &self.on_pdu {
            b |= h.bit();
        }
        b
    }
}

/// The engine thread's own state, reached from the Python API through a thread-local.
struct Ctx {
    shared: Arc<Shared>,
    read: OwnedFd,
    event_loop: Py<PyAny>,
    where_fn: Py<PyAny>,
    coroutine_type: Py<PyAny>,
    /// PRELUDE's `start`: a coroutine's Task with its first step run.
    start_fn: Py<PyAny>,
    registry: RefCell<Registry>,
    /// Some while a script is being imported: the decorators register here.
    loading: RefCell<Option<Registry>>,
}

thread_local! {
    static CTX: RefCell<Option<Rc<Ctx>>> = const { RefCell::new(None) };
}

fn ctx() -> PyResult<Rc<Ctx>> {
    CTX.with(|c| c.borrow().clone())
        .ok_or_else(|| PyRuntimeError::new_err("smscd handlers API used outside smscd's handler thread"))
}

impl Ctx {
    /// Start a timed segment (a sync call or an import).
    fn begin(&self, limit: Duration) -> u64 {
        self.shared.begin(limit)
    }

    /// End segment `id`: whether the watchdog interrupted it (a pending exception not raised yet
    /// is cleared, so it cannot land in the loop). The loop's own busy segment starts again.
    fn end(&self, py: Python<'_>, id: u64) -> bool {
        let hit = self.shared.interrupted.load(Ordering::Acquire) == id;
        if hit {
            let tid = self.shared.thread_ident.load(Ordering::Acquire);
            // SAFETY: GIL held; NULL clears this thread's pending async exception.
            unsafe {
                pyo3::ffi::PyThreadState_SetAsyncExc(tid as std::os::raw::c_long, std::ptr::null_mut())
            };
        }
        let _ = py;
        self.shared.begin(Duration::from_nanos(self.shared.loop_limit.load(Ordering::Relaxed)));
        hit
    }

    fn handler(&self, py: Python<'_>, hook: Hook) -> Option<Py<PyAny>> {
        let r = self.registry.borrow();
        match hook {
            Hook::Bind => r.on_bind.as_ref().map(|f| f.clone_ref(py)),
            h => r.on_pdu.iter().find(|(k, _)| *k == h).map(|(_, f)| f.clone_ref(py)),
        }
    }

    /// `file:line: Type: message` for an exception from the script.
    fn describe(&self, py: Python<'_>, e: &PyErr) -> String {
        let tb = e.traceback(py).map(|t| t.into_any().unbind()).unwrap_or_else(|| py.None());
        match self.where_fn.call1(py, (e.value(py), tb)).and_then(|s| s.extract::<String>(py)) {
            Ok(s) => s,
            Err(_) => e.to_string(),
        }
    }

    fn failure_of(&self, py: Python<'_>, e: &PyErr, interrupted: bool) -> Failure {
        let detail = self.describe(py, e);
        if interrupted || e.is_instance_of::<HandlerTimeout>(py) {
            failure(FailureKind::Timeout, format!("ran past timeout_ms ({detail})"))
        } else {
            failure(FailureKind::Exception, detail)
        }
    }
}

fn thread_main(shared: Arc<Shared>, read: OwnedFd, ready: std::sync::mpsc::Sender<Result<(), String>>) {
    let result = Python::with_gil(|py| -> PyResult<()> {
        install_modules(py)?;
        let ident: u64 = py.import("threading")?.call_method0("get_ident")?.extract()?;
        shared.thread_ident.store(ident, Ordering::Release);
        let code = CString::new(PRELUDE).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let prelude = PyModule::from_code(py, &code, c"<smscd-runtime>", c"_smscd_runtime")?;
        let event_loop = prelude.getattr("new_loop")?.call0()?.unbind();
        let ctx = Rc::new(Ctx {
            shared: shared.clone(),
            read,
            where_fn: prelude.getattr("where")?.unbind(),
            coroutine_type: prelude.getattr("CoroutineType")?.unbind(),
            start_fn: prelude.getattr("start")?.unbind(),
            event_loop,
            registry: RefCell::new(Registry::default()),
            loading: RefCell::new(None),
        });
        CTX.with(|c| *c.borrow_mut() = Some(ctx.clone()));
        let pump = Py::new(py, Pump)?;
        ctx.event_loop.call_method1(py, "add_reader", (ctx.read.as_raw_fd(), pump))?;
        let _ = ready.send(Ok(()));
        loop {
            match ctx.event_loop.call_method0(py, "run_forever") {
                Ok(_) => break,
                Err(e) if !shared.alive.load(Ordering::Acquire) => {
                    tracing::debug!(error = %e, "handler loop ended");
                    break;
                }
                // A timeout that landed in the loop's own code: keep serving.
                Err(e) => tracing::warn!(error = %e, "handler loop interrupted; running on"),
            }
        }
        let _ = ctx.event_loop.call_method0(py, "close");
        CTX.with(|c| *c.borrow_mut() = None);
        Ok(())
    });
    shared.alive.store(false, Ordering::Release);
    if let Err(e) = result {
        let msg = Python::with_gil(|py| match e.traceback(py).and_then(|t| t.format().ok()) {
            Some(tb) => format!("{e}\n{tb}"),
            None => e.to_string(),
        });
        let _ = ready.send(Err(msg));
    }
    // Answer whatever is still queued: the callers see the engine as stopped.
    let left = std::mem::take(&mut *shared.queue.lock().unwrap_or_else(|p| p.into_inner()));
    drop(left);
}

/// The loop's reader callback on the wake-up pipe: runs every queued job.
#[pyclass(frozen)]
struct Pump;

#[pymethods]
impl Pump {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let ctx = ctx()?;
        let mut buf = [0u8; 256];
        // SAFETY: reading into a live buffer from our own non-blocking pipe.
        while unsafe { libc::read(ctx.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        ctx.shared.armed.store(false, Ordering::Release);
        let jobs = std::mem::take(&mut *ctx.shared.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for job in jobs {
            run(py, &ctx, job);
        }
        Ok(())
    }
}

fn run(py: Python<'_>, ctx: &Rc<Ctx>, job: Job) {
    match job {
        Job::Pdu { hook, sm, session, matched, deadline, timeout, tx } => {
            ctx.shared.loop_limit.store(timeout.as_nanos() as u64, Ordering::Relaxed);
            if Instant::now() > deadline {
                let _ =
                    tx.send(Err(failure(FailureKind::Timeout, "queued past timeout_ms behind slower calls")));
                return;
            }
            let Some(f) = ctx.handler(py, hook) else {
                let _ = tx.send(Ok(PduVerdict::Continue(sm)));
                return;
            };
            let pdu = match Py::new(py, PyPdu { hook, sm, matched }) {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(failure(FailureKind::Exception, e.to_string())));
                    return;
                }
            };
            let from_upstream = session.upstream.is_some();
            let session = PySession {
                system_id: session.system_id,
                client_addr: session.client_addr,
                client_port: session.client_port,
                bind_type: session.bind_type,
                upstream: session.upstream.map(|u| u.to_string()),
            };
            let id = ctx.begin(timeout);
            let r = f.call1(py, (pdu.clone_ref(py), session));
            let hit = ctx.end(py, id);
            match r {
                Err(e) => {
                    let _ = tx.send(Err(ctx.failure_of(py, &e, hit)));
                }
                Ok(obj) if is_coroutine(py, ctx, &obj) => {
                    spawn_task(py, ctx, obj, Pending::Pdu { tx, pdu, hook, from_upstream }, timeout);
                }
                Ok(obj) => {
                    let _ = tx.send(pdu_verdict(py, hook, from_upstream, obj.bind(py), &pdu));
                }
            }
        }
        Job::Bind { info, deadline, timeout, tx } => {
            ctx.shared.loop_limit.store(timeout.as_nanos() as u64, Ordering::Relaxed);
            if Instant::now() > deadline {
                let _ =
                    tx.send(Err(failure(FailureKind::Timeout, "queued past timeout_ms behind slower calls")));
                return;
            }
            let Some(f) = ctx.handler(py, Hook::Bind) else {
                let _ = tx.send(Ok(BindVerdict::Default));
                return;
            };
            let bind = PyBind {
                system_id: info.system_id,
                password: info.password,
                system_type: info.system_type,
                bind_type: info.bind_type,
                interface_version: info.interface_version,
                client_addr: info.client_addr,
                client_port: info.client_port,
            };
            let id = ctx.begin(timeout);
            let r = f.call1(py, (bind,));
            let hit = ctx.end(py, id);
            match r {
                Err(e) => {
                    let _ = tx.send(Err(ctx.failure_of(py, &e, hit)));
                }
                Ok(obj) if is_coroutine(py, ctx, &obj) => {
                    spawn_task(py, ctx, obj, Pending::Bind { tx }, timeout)
                }
                Ok(obj) => {
                    let _ = tx.send(bind_verdict(obj.bind(py)));
                }
            }
        }
        Job::Load { path, source, limit, tx } => {
            let _ = tx.send(load(py, ctx, &path, source, limit));
        }
        Job::CacheDone { fut, result } => {
            let fut = fut.bind(py);
            if fut.call_method0("done").and_then(|d| d.is_truthy()).unwrap_or(true) {
                return;
            }
            let r = match result {
                Ok(v) => fut.call_method1("set_result", (cache_value(py, v),)),
                Err(e) => {
                    fut.call_method1("set_exception", (PyRuntimeError::new_err(format!("smpp.cache: {e}")),))
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "cache result not delivered");
            }
        }
        Job::Stop => {
            ctx.shared.alive.store(false, Ordering::Release);
            let _ = ctx.event_loop.call_method0(py, "stop");
        }
    }
}

fn is_coroutine(py: Python<'_>, ctx: &Ctx, obj: &Py<PyAny>) -> bool {
    obj.bind(py).is_instance(ctx.coroutine_type.bind(py)).unwrap_or(false)
}

/// Import `source` as a fresh module; its registrations replace the running ones only if the
/// whole import succeeds.
fn load(py: Python<'_>, ctx: &Rc<Ctx>, path: &Path, source: Vec<u8>, limit: Duration) -> Result<(), String> {
    let shown = path.display().to_string();
    let code = CString::new(source).map_err(|_| format!("{shown}: the script contains a NUL byte"))?;
    let file = CString::new(shown.clone()).map_err(|_| format!("{shown}: path contains a NUL byte"))?;
    let stem =
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "smpp_script".into());
    let module = CString::new(stem.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
        .map_err(|_| format!("{shown}: bad module name"))?;
    *ctx.loading.borrow_mut() = Some(Registry::default());
    let id = ctx.begin(limit);
    let r = PyModule::from_code(py, &code, &file, &module);
    let hit = ctx.end(py, id);
    let registered = ctx.loading.borrow_mut().take().unwrap_or_default();
    match r {
        Err(e) => {
            let mut detail = ctx.describe(py, &e);
            if !detail.starts_with(&shown) {
                // Raised where no frame of the script was recorded (an interrupt between lines).
                detail = format!("{shown}: {detail}");
            }
            if hit || e.is_instance_of::<HandlerTimeout>(py) {
                Err(format!("import ran past import_timeout_ms ({} ms): {detail}", limit.as_millis()))
            } else {
                Err(detail)
            }
        }
        Ok(_) => {
            let bits = registered.bits();
            *ctx.registry.borrow_mut() = registered;
            ctx.shared.flags.store(bits, Ordering::Release);
            Ok(())
        }
    }
}

/// An async call in flight, answered when its task ends.
enum Pending {
    Bind { tx: oneshot::Sender<Result<BindVerdict, Failure>> },
    Pdu { tx: oneshot::Sender<Result<PduVerdict, Failure>>, pdu: Py<PyPdu>, hook: Hook, from_upstream: bool },
}

/// Run an async handler's coroutine: its first step at once (timed like a sync call), and only
/// if it suspends, the rest on the loop with a timeout timer and a done callback.
fn spawn_task(py: Python<'_>, ctx: &Ctx, coro: Py<PyAny>, pending: Pending, timeout: Duration) {
    let id = ctx.begin(timeout);
    let task = ctx.start_fn.bind(py).call1((ctx.event_loop.bind(py), coro));
    let hit = ctx.end(py, id);
    let task = match task {
        Ok(t) => t,
        Err(e) => return pending.answer(py, Err(ctx.failure_of(py, &e, hit))),
    };
    if task.call_method0("done").and_then(|d| d.is_truthy()).unwrap_or(false) {
        return pending.answer(py, outcome(py, ctx, &task, hit));
    }
    let started = (|| -> PyResult<()> {
        let timer = ctx
            .event_loop
            .bind(py)
            .call_method1("call_later", (timeout.as_secs_f64(), task.getattr("cancel")?))?;
        let done = Done { pending: Mutex::new(None), timer: timer.unbind() };
        let done = Py::new(py, done)?;
        *done.get().pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(pending);
        task.call_method1("add_done_callback", (done.clone_ref(py),))?;
        Ok(())
    })();
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start an async handler");
    }
}

/// The done callback of an async handler's task.
#[pyclass(frozen)]
struct Done {
    pending: Mutex<Option<Pending>>,
    timer: Py<PyAny>,
}

#[pymethods]
impl Done {
    fn __call__(&self, py: Python<'_>, task: Bound<'_, PyAny>) -> PyResult<()> {
        let Some(pending) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let _ = self.timer.call_method0(py, "cancel");
        let ctx = ctx()?;
        pending.answer(py, outcome(py, &ctx, &task, false));
        Ok(())
    }
}

/// What a finished task of an async handler gave; `interrupted`: the watchdog hit its first step.
fn outcome<'py>(
    py: Python<'py>,
    ctx: &Ctx,
    task: &Bound<'py, PyAny>,
    interrupted: bool,
) -> Result<Bound<'py, PyAny>, Failure> {
    if task.call_method0("cancelled").and_then(|c| c.is_truthy()).unwrap_or(false) {
        return Err(failure(FailureKind::Timeout, "async handler ran past timeout_ms and was cancelled"));
    }
    task.call_method0("result").map_err(|e| ctx.failure_of(py, &e, interrupted))
}

impl Pending {
    fn answer(self, py: Python<'_>, outcome: Result<Bound<'_, PyAny>, Failure>) {
        match self {
            Pending::Bind { tx } => {
                let _ = tx.send(outcome.and_then(|v| bind_verdict(&v)));
            }
            Pending::Pdu { tx, pdu, hook, from_upstream } => {
                let _ = tx.send(outcome.and_then(|v| pdu_verdict(py, hook, from_upstream, &v, &pdu)));
            }
        }
    }
}

fn wrong_type(hook: Hook, v: &Bound<'_, PyAny>, expected: &str) -> Failure {
    let name = v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    failure(FailureKind::WrongType, format!("{} returned {name}, expected {expected}", hook.label()))
}

fn bind_verdict(v: &Bound<'_, PyAny>) -> Result<BindVerdict, Failure> {
    if v.is_none() {
        return Ok(BindVerdict::Default);
    }
    if let Ok(verdict) = v.downcast::<Verdict>() {
        match &verdict.get().0 {
            Inner::BindAccept { window, throttle } => {
                return Ok(BindVerdict::Accept { window: *window, throttle: *throttle })
            }
            Inner::BindReject(s) => return Ok(BindVerdict::Reject(*s)),
            _ => {}
        }
    }
    Err(wrong_type(Hook::Bind, v, "bind.accept(), bind.reject(status) or None"))
}

/// The verdict `v` for a PDU; `from_upstream`: a deliver_sm / data_sm from an upstream, which
/// has no chain to choose (it goes to an ESME by `routing.mo` or its receipt's correlation).
fn pdu_verdict(
    py: Python<'_>,
    hook: Hook,
    from_upstream: bool,
    v: &Bound<'_, PyAny>,
    pdu: &Py<PyPdu>,
) -> Result<PduVerdict, Failure> {
    let take = || std::mem::take(&mut pdu.borrow_mut(py).sm);
    if v.is_none() {
        return Ok(PduVerdict::Continue(take()));
    }
    if let Ok(verdict) = v.downcast::<Verdict>() {
        match &verdict.get().0 {
            Inner::Reply { message_id, status } => {
                return Ok(PduVerdict::Reply { message_id: message_id.clone(), status: *status })
            }
            Inner::Reject(s) => return Ok(PduVerdict::Reject(*s)),
            Inner::Route(chain) if !from_upstream => return Ok(PduVerdict::Route(chain.clone(), take())),
            _ => {}
        }
    }
    if from_upstream {
        return Err(wrong_type(
            hook,
            v,
            "pdu.reply(...), pdu.reject(status) or None (no pdu.route for a PDU from an upstream)",
        ));
    }
    Err(wrong_type(hook, v, "pdu.reply(...), pdu.reject(status), pdu.route([...]) or None"))
}

// ---- the Python API -----------------------------------------------------------------------------

/// Makes `smscd`, `siphon` and `siphon.smpp` importable (once per process; every engine shares
/// the modules, and the functions reach the calling engine through its thread).
fn install_modules(py: Python<'_>) -> PyResult<()> {
    let modules = py.import("sys")?.getattr("modules")?;
    if modules.contains("smscd")? {
        return Ok(());
    }
    let m = PyModule::new(py, "smscd")?;
    m.add("__doc__", "smscd's handler API; also importable as `from siphon import smpp`.")?;
    m.add_function(wrap_pyfunction!(on_bind, &m)?)?;
    m.add_function(wrap_pyfunction!(on_pdu, &m)?)?;
    m.add_function(wrap_pyfunction!(_loop_idle, &m)?)?;
    m.add_function(wrap_pyfunction!(_loop_busy, &m)?)?;
    m.add("cache", Py::new(py, PyCache)?)?;
    m.add("HandlerTimeout", py.get_type::<HandlerTimeout>())?;
    m.add_class::<PyBind>()?;
    m.add_class::<PyPdu>()?;
    m.add_class::<PySession>()?;
    m.add_class::<PyReceipt>()?;
    m.add_class::<Verdict>()?;
    for v in 0..=0xFFu32 {
        if let Some(name) = CommandStatus(v).name() {
            m.add(name, v)?;
        }
    }
    m.add("smpp", &m)?;
    let siphon = PyModule::new(py, "siphon")?;
    siphon.add("smpp", &m)?;
    modules.set_item("smscd", &m)?;
    modules.set_item("smscd.smpp", &m)?;
    modules.set_item("siphon", &siphon)?;
    modules.set_item("siphon.smpp", &m)?;
    Ok(())
}

#[pyfunction]
fn _loop_idle() -> PyResult<()> {
    let ctx = ctx()?;
    ctx.shared.seg_start.store(0, Ordering::Release);
    Ok(())
}

#[pyfunction]
fn _loop_busy() -> PyResult<()> {
    let ctx = ctx()?;
    ctx.shared.begin(Duration::from_nanos(ctx.shared.loop_limit.load(Ordering::Relaxed)));
    Ok(())
}

fn register(hook: Hook, f: &Bound<'_, PyAny>) -> PyResult<()> {
    if !f.is_callable() {
        return Err(PyTypeError::new_err(format!("{}: the handler must be a function", hook.label())));
    }
    let ctx = ctx()?;
    let mut loading = ctx.loading.borrow_mut();
    let Some(reg) = loading.as_mut() else {
        return Err(PyRuntimeError::new_err(
            "handlers can only be registered while smscd imports the script",
        ));
    };
    let f = f.clone().unbind();
    match hook {
        Hook::Bind => reg.on_bind = Some(f),
        h => {
            reg.on_pdu.retain(|(k, _)| *k != h);
            reg.on_pdu.push((h, f));
        }
    }
    Ok(())
}

/// `@smpp.on_bind`: registers the bind handler and returns it unchanged.
#[pyfunction]
fn on_bind<'py>(f: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    register(Hook::Bind, &f)?;
    Ok(f)
}

/// `@smpp.on_pdu("submit_sm")`: a decorator registering the handler for that command.
#[pyfunction]
fn on_pdu(command: &str) -> PyResult<OnPdu> {
    match Hook::from_command(command) {
        Some(hook) => Ok(OnPdu { hook }),
        None => Err(PyValueError::new_err(format!(
            "on_pdu: unknown command `{command}` (submit_sm, deliver_sm or data_sm)"
        ))),
    }
}

#[pyclass(frozen)]
struct OnPdu {
    hook: Hook,
}

#[pymethods]
impl OnPdu {
    fn __call__<'py>(&self, f: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        register(self.hook, &f)?;
        Ok(f)
    }
}

/// A handler's answer, made by `bind.accept()`, `pdu.reply()` and friends.
#[pyclass(frozen, name = "Verdict")]
struct Verdict(Inner);

enum Inner {
    BindAccept { window: Option<usize>, throttle: Option<u32> },
    BindReject(CommandStatus),
    Reply { message_id: Option<String>, status: CommandStatus },
    Reject(CommandStatus),
    Route(Arc<[Target]>),
}

#[pymethods]
impl Verdict {
    fn __repr__(&self) -> String {
        match &self.0 {
            Inner::BindAccept { .. } => "<accept>".into(),
            Inner::BindReject(s) | Inner::Reject(s) => format!("<reject {s}>"),
            Inner::Reply { message_id, status } => format!("<reply {message_id:?} {status}>"),
            Inner::Route(c) => format!("<route {:?}>", c.iter().map(Target::label).collect::<Vec<_>>()),
        }
    }
}

/// A status argument: a number or a spec name (`"ESME_RINVDSTADR"`).
fn status_arg(v: Option<&Bound<'_, PyAny>>, default: CommandStatus) -> PyResult<CommandStatus> {
    let Some(v) = v.filter(|v| !v.is_none()) else { return Ok(default) };
    if let Ok(n) = v.extract::<u32>() {
        return Ok(CommandStatus(n));
    }
    if let Ok(name) = v.extract::<String>() {
        if let Some(s) = (0..=0xFFu32).map(CommandStatus).find(|s| s.name() == Some(name.as_str())) {
            return Ok(s);
        }
        return Err(PyValueError::new_err(format!("unknown command_status `{name}`")));
    }
    Err(PyTypeError::new_err("status must be an int or a name such as \"ESME_RINVDSTADR\""))
}

/// What `on_bind` gets.
#[pyclass(frozen, name = "Bind")]
struct PyBind {
    #[pyo3(get)]
    system_id: String,
    #[pyo3(get)]
    password: String,
    #[pyo3(get)]
    system_type: String,
    #[pyo3(get)]
    bind_type: &'static str,
    #[pyo3(get)]
    interface_version: u8,
    #[pyo3(get)]
    client_addr: String,
    #[pyo3(get)]
    client_port: u16,
}

#[pymethods]
impl PyBind {
    /// Bind the ESME whatever `accounts` say; `window` and `throttle` (submits a second) apply to
    /// this session.
    #[pyo3(signature = (window=None, throttle=None))]
    fn accept(&self, window: Option<usize>, throttle: Option<u32>) -> PyResult<Verdict> {
        if window == Some(0) {
            return Err(PyValueError::new_err("accept: window must be at least 1"));
        }
        Ok(Verdict(Inner::BindAccept { window, throttle }))
    }

    /// Refuse the bind with `status` (default ESME_RBINDFAIL).
    #[pyo3(signature = (status=None))]
    fn reject(&self, status: Option<Bound<'_, PyAny>>) -> PyResult<Verdict> {
        let s = status_arg(status.as_ref(), CommandStatus::ESME_RBINDFAIL)?;
        if s.is_ok() {
            return Err(PyValueError::new_err("reject: status must not be ESME_ROK"));
        }
        Ok(Verdict(Inner::BindReject(s)))
    }

    fn __repr__(&self) -> String {
        format!("<Bind {} {} from {}>", self.system_id, self.bind_type, self.client_addr)
    }
}

/// The session a PDU came on.
#[pyclass(frozen, name = "Session")]
struct PySession {
    #[pyo3(get)]
    system_id: String,
    #[pyo3(get)]
    client_addr: String,
    #[pyo3(get)]
    client_port: u16,
    #[pyo3(get)]
    bind_type: &'static str,
    /// The upstream bind's name (in `binds`) for a PDU from an upstream; None from an ESME.
    #[pyo3(get)]
    upstream: Option<String>,
}

/// The fields of a delivery receipt (`pdu.receipt`), read from the receipted_message_id and
/// message_state TLVs where present, else from the text (`id:... stat:... err:...`). A receipt
/// that matched a message of ours is shown with our id in place of the upstream's (as the ESME
/// gets it); `upstream_id` and `account` come from the match.
#[pyclass(frozen, name = "Receipt")]
struct PyReceipt {
    #[pyo3(get)]
    id: Option<String>,
    /// The upstream's id for the message (the same as `id` when the receipt matched nothing).
    #[pyo3(get)]
    upstream_id: Option<String>,
    /// The account that submitted the message; None when the receipt matched nothing.
    #[pyo3(get)]
    account: Option<String>,
    /// The `stat:` word of the text, or the TLV state's word.
    #[pyo3(get)]
    stat: Option<String>,
    /// SMPP message_state (1 ENROUTE .. 8 REJECTD), None when not known.
    #[pyo3(get)]
    message_state: Option<u8>,
    #[pyo3(get)]
    err: Option<String>,
    #[pyo3(get)]
    sub: Option<String>,
    #[pyo3(get)]
    dlvrd: Option<String>,
    #[pyo3(get)]
    submit_date: Option<String>,
    #[pyo3(get)]
    done_date: Option<String>,
    #[pyo3(get)]
    text: Option<String>,
}

#[pymethods]
impl PyReceipt {
    fn __repr__(&self) -> String {
        format!(
            "<Receipt id={:?} upstream_id={:?} account={:?} stat={:?} err={:?}>",
            self.id, self.upstream_id, self.account, self.stat, self.err
        )
    }
}

impl PyReceipt {
    fn of(sm: &SubmitSm, matched: Option<&ReceiptMatch>) -> PyReceipt {
        let parsed =
            smpp::receipt::Receipt::parse(&crate::receipts::decode_text(sm.data_coding, sm.payload())).ok();
        let tlv_id = sm
            .tlvs
            .receipted_message_id()
            .map(|b| {
                String::from_utf8_lossy(b).trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_owned()
            })
            .filter(|s| !s.is_empty());
        let tlv_state = sm.tlvs.message_state().and_then(smpp::receipt::MessageState::from_u8);
        let state = tlv_state.or_else(|| parsed.as_ref().and_then(|r| r.stat.state()));
        let stat = parsed
            .as_ref()
            .map(|r| r.stat.to_string())
            .or_else(|| tlv_state.map(|s| s.stat_word().to_owned()));
        let p = parsed.as_ref();
        let id = tlv_id.or_else(|| p.map(|r| r.id.clone()));
        PyReceipt {
            upstream_id: matched.map(|m| m.upstream_id.clone()).or_else(|| id.clone()),
            account: matched.map(|m| m.account.clone()),
            id,
            stat,
            message_state: state.map(|s| s.as_u8()),
            err: p.and_then(|r| r.err.clone()),
            sub: p.and_then(|r| r.sub.clone()),
            dlvrd: p.and_then(|r| r.dlvrd.clone()),
            submit_date: p.and_then(|r| r.submit_date.clone()),
            done_date: p.and_then(|r| r.done_date.clone()),
            text: p.and_then(|r| r.text.clone()),
        }
    }
}

/// A submit_sm (or deliver_sm / data_sm) a handler may read and change.
#[pyclass(name = "Pdu")]
struct PyPdu {
    hook: Hook,
    sm: SubmitSm,
    /// The message a receipt matched, when it did.
    matched: Option<ReceiptMatch>,
}

/// esm_class message types that report on a message (see `receipts::kind`).
fn is_report(esm_class: u8) -> bool {
    use crate::receipts::kind;
    matches!(
        esm_class & smpp::pdu::esm_class::MESSAGE_TYPE_MASK,
        kind::SMSC_RECEIPT | kind::SME_DELIVERY_ACK | kind::SME_MANUAL_ACK | kind::INTERMEDIATE
    )
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn c_string(field: &str, v: &str, max: usize) -> PyResult<bytes::Bytes> {
    if v.len() > max || v.contains('\0') {
        return Err(PyValueError::new_err(format!("{field}: at most {max} octets, no NUL")));
    }
    Ok(bytes::Bytes::from(v.to_owned()))
}

#[pymethods]
impl PyPdu {
    #[getter]
    fn command(&self) -> &'static str {
        match self.hook {
            Hook::DeliverSm => "deliver_sm",
            Hook::DataSm => "data_sm",
            _ => "submit_sm",
        }
    }
    /// Whether this is a delivery receipt or another report on a submitted message (esm_class
    /// message type SMSC receipt, SME acknowledgement or intermediate notification), not MO.
    #[getter]
    fn is_receipt(&self) -> bool {
        self.hook != Hook::SubmitSm && is_report(self.sm.esm_class)
    }
    /// The receipt's fields ([`PyReceipt`]) when `is_receipt`, else None.
    #[getter]
    fn receipt(&self) -> Option<PyReceipt> {
        self.is_receipt().then(|| PyReceipt::of(&self.sm, self.matched.as_ref()))
    }
    #[getter]
    fn service_type(&self) -> String {
        text_of(&self.sm.service_type)
    }
    #[setter]
    fn set_service_type(&mut self, v: &str) -> PyResult<()> {
        self.sm.service_type = c_string("service_type", v, 5)?;
        Ok(())
    }
    #[getter]
    fn source_addr(&self) -> String {
        text_of(&self.sm.source.addr)
    }
    #[setter]
    fn set_source_addr(&mut self, v: &str) -> PyResult<()> {
        self.sm.source.addr = c_string("source_addr", v, 20)?;
        Ok(())
    }
    #[getter]
    fn source_addr_ton(&self) -> u8 {
        self.sm.source.ton
    }
    #[setter]
    fn set_source_addr_ton(&mut self, v: u8) {
        self.sm.source.ton = v;
    }
    #[getter]
    fn source_addr_npi(&self) -> u8 {
        self.sm.source.npi
    }
    #[setter]
    fn set_source_addr_npi(&mut self, v: u8) {
        self.sm.source.npi = v;
    }
    #[getter]
    fn destination_addr(&self) -> String {
        text_of(&self.sm.destination.addr)
    }
    #[setter]
    fn set_destination_addr(&mut self, v: &str) -> PyResult<()> {
        self.sm.destination.addr = c_string("destination_addr", v, 20)?;
        Ok(())
    }
    #[getter]
    fn dest_addr_ton(&self) -> u8 {
        self.sm.destination.ton
    }
    #[setter]
    fn set_dest_addr_ton(&mut self, v: u8) {
        self.sm.destination.ton = v;
    }
    #[getter]
    fn dest_addr_npi(&self) -> u8 {
        self.sm.destination.npi
    }
    #[setter]
    fn set_dest_addr_npi(&mut self, v: u8) {
        self.sm.destination.npi = v;
    }
    #[getter]
    fn esm_class(&self) -> u8 {
        self.sm.esm_class
    }
    #[setter]
    fn set_esm_class(&mut self, v: u8) {
        self.sm.esm_class = v;
    }
    #[getter]
    fn protocol_id(&self) -> u8 {
        self.sm.protocol_id
    }
    #[setter]
    fn set_protocol_id(&mut self, v: u8) {
        self.sm.protocol_id = v;
    }
    #[getter]
    fn priority_flag(&self) -> u8 {
        self.sm.priority_flag
    }
    #[setter]
    fn set_priority_flag(&mut self, v: u8) {
        self.sm.priority_flag = v;
    }
    #[getter]
    fn registered_delivery(&self) -> u8 {
        self.sm.registered_delivery
    }
    #[setter]
    fn set_registered_delivery(&mut self, v: u8) {
        self.sm.registered_delivery = v;
    }
    #[getter]
    fn data_coding(&self) -> u8 {
        self.sm.data_coding
    }
    #[setter]
    fn set_data_coding(&mut self, v: u8) {
        self.sm.data_coding = v;
    }
    #[getter]
    fn schedule_delivery_time(&self) -> String {
        text_of(&self.sm.schedule_delivery_time)
    }
    #[setter]
    fn set_schedule_delivery_time(&mut self, v: &str) -> PyResult<()> {
        self.sm.schedule_delivery_time = c_string("schedule_delivery_time", v, 16)?;
        Ok(())
    }
    #[getter]
    fn validity_period(&self) -> String {
        text_of(&self.sm.validity_period)
    }
    #[setter]
    fn set_validity_period(&mut self, v: &str) -> PyResult<()> {
        self.sm.validity_period = c_string("validity_period", v, 16)?;
        Ok(())
    }
    /// The raw octets of short_message.
    #[getter]
    fn short_message<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.sm.short_message)
    }
    #[setter]
    fn set_short_message(&mut self, v: Vec<u8>) -> PyResult<()> {
        if v.len() > 254 {
            return Err(PyValueError::new_err("short_message: at most 254 octets (set `text` for longer)"));
        }
        self.sm.short_message = v.into();
        Ok(())
    }
    /// The message text (short_message or message_payload, without a UDH), decoded by data_coding.
    #[getter]
    fn text(&self) -> String {
        let payload = self.sm.payload();
        let body = if self.sm.esm_class & 0x40 != 0 && !payload.is_empty() {
            let skip = usize::from(payload[0]) + 1;
            payload.get(skip..).unwrap_or_default()
        } else {
            &payload[..]
        };
        smpp::text::decode(DataCoding(self.sm.data_coding), body)
    }
    /// Replaces the text: encoded in the current data_coding when it can carry it, else GSM 7-bit
    /// or UCS2 (data_coding changes); over 254 octets it goes in message_payload. A UDH is dropped.
    #[setter]
    fn set_text(&mut self, v: &str) {
        let dc = DataCoding(self.sm.data_coding);
        let (dc, octets) = match smpp::text::encode(dc, v) {
            Ok(o) => (dc, o),
            Err(_) => smpp::text::encode_best(v),
        };
        self.sm.data_coding = dc.0;
        self.sm.esm_class &= !0x40;
        if octets.len() > 254 {
            self.sm.short_message = bytes::Bytes::new();
            self.sm.tlvs.set_message_payload(octets);
        } else {
            self.sm.tlvs.remove(Tag::MESSAGE_PAYLOAD);
            self.sm.short_message = octets.into();
        }
    }
    /// The value of TLV `tag`, or None.
    fn tlv<'py>(&self, py: Python<'py>, tag: u16) -> Option<Bound<'py, PyBytes>> {
        self.sm.tlvs.get(Tag(tag)).map(|b| PyBytes::new(py, b))
    }
    /// Set TLV `tag` to `value`, or remove it with None.
    #[pyo3(signature = (tag, value))]
    fn set_tlv(&mut self, tag: u16, value: Option<Vec<u8>>) {
        match value {
            Some(v) => self.sm.tlvs.set(Tag(tag), v),
            None => self.sm.tlvs.remove(Tag(tag)),
        }
    }
    /// Every TLV as {tag: bytes}.
    #[getter]
    fn tlvs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for t in self.sm.tlvs.iter() {
            d.set_item(t.tag.0, PyBytes::new(py, &t.value))?;
        }
        Ok(d)
    }
    /// Answer here: `status` 0 (default) with `message_id` (default: one of ours), or an error.
    #[pyo3(signature = (message_id=None, status=None))]
    fn reply(&self, message_id: Option<String>, status: Option<Bound<'_, PyAny>>) -> PyResult<Verdict> {
        let status = status_arg(status.as_ref(), CommandStatus::ESME_ROK)?;
        if let Some(id) = &message_id {
            if id.len() > 64 || id.contains('\0') {
                return Err(PyValueError::new_err("reply: message_id is at most 64 octets, no NUL"));
            }
        }
        Ok(Verdict(Inner::Reply { message_id, status }))
    }
    /// Refuse with `status` (default ESME_RSUBMITFAIL; ESME_RX_R_APPN for a deliver_sm).
    #[pyo3(signature = (status=None))]
    fn reject(&self, status: Option<Bound<'_, PyAny>>) -> PyResult<Verdict> {
        let default = match self.hook {
            Hook::DeliverSm => CommandStatus::ESME_RX_R_APPN,
            _ => CommandStatus::ESME_RSUBMITFAIL,
        };
        let s = status_arg(status.as_ref(), default)?;
        if s.is_ok() {
            return Err(PyValueError::new_err("reject: status must not be ESME_ROK"));
        }
        Ok(Verdict(Inner::Reject(s)))
    }
    /// Send along this chain (`"bind:NAME"`, `"sim"`) instead of the routing rules.
    fn route(&self, chain: Vec<String>) -> PyResult<Verdict> {
        let mut targets = Vec::with_capacity(chain.len());
        for t in &chain {
            match Target::parse(t) {
                Some(t) => targets.push(t),
                None => {
                    return Err(PyValueError::new_err(format!("route: `{t}` is not `sim` or `bind:NAME`")))
                }
            }
        }
        if targets.is_empty() {
            return Err(PyValueError::new_err("route: the chain is empty"));
        }
        Ok(Verdict(Inner::Route(targets.into())))
    }
    fn __repr__(&self) -> String {
        format!("<{} {} -> {}>", self.command(), self.source_addr(), self.destination_addr())
    }
}

// ---- smpp.cache -----------------------------------------------------------------------------------

fn cache_value(py: Python<'_>, v: CacheValue) -> Py<PyAny> {
    match v {
        CacheValue::None => py.None(),
        CacheValue::Str(s) => {
            s.into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None())
        }
        CacheValue::Int(n) => {
            n.into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None())
        }
        CacheValue::Bool(b) => {
            b.into_pyobject(py).map(|o| o.to_owned().into_any().unbind()).unwrap_or_else(|_| py.None())
        }
    }
}

/// A cache value: text is stored as given, numbers as their decimal text.
fn value_text(v: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = v.extract::<String>() {
        return Ok(s);
    }
    if v.extract::<bool>().is_err() {
        if let Ok(n) = v.extract::<i64>() {
            return Ok(n.to_string());
        }
        if let Ok(f) = v.extract::<f64>() {
            return Ok(f.to_string());
        }
    }
    if let Ok(b) = v.extract::<Vec<u8>>() {
        return String::from_utf8(b).map_err(|_| PyValueError::new_err("smpp.cache: bytes must be UTF-8"));
    }
    Err(PyTypeError::new_err("smpp.cache: values are str, int or float"))
}

fn ttl_arg(ttl: Option<f64>) -> PyResult<Option<Duration>> {
    match ttl {
        None => Ok(None),
        Some(t) if t > 0.0 && t.is_finite() => Ok(Some(Duration::from_secs_f64(t))),
        Some(_) => Err(PyValueError::new_err("smpp.cache: ttl is a positive number of seconds")),
    }
}

/// `smpp.cache`: awaitable get / set / incr / delete on the configured store (memory, or Redis
/// shared by every replica).
#[pyclass(frozen, name = "Cache")]
struct PyCache;

impl PyCache {
    /// An asyncio future for `op`: resolved at once by the memory store, from a tokio task (via the
    /// engine's queue) by Redis.
    fn start(&self, py: Python<'_>, op: Op) -> PyResult<Py<PyAny>> {
        let ctx = ctx()?;
        let fut = ctx.event_loop.call_method0(py, "create_future")?;
        let cache = ctx.shared.cache.clone();
        if let Some(r) = cache.try_now(&op) {
            match r {
                Ok(v) => fut.call_method1(py, "set_result", (cache_value(py, v),))?,
                Err(e) => fut.call_method1(
                    py,
                    "set_exception",
                    (PyRuntimeError::new_err(format!("smpp.cache: {e}")),),
                )?,
            };
            return Ok(fut);
        }
        let shared = ctx.shared.clone();
        let handle = fut.clone_ref(py);
        ctx.shared.rt.spawn(async move {
            let result = cache.run(op).await;
            shared.push(Job::CacheDone { fut: handle, result });
        });
        Ok(fut)
    }
}

#[pymethods]
impl PyCache {
    /// `await smpp.cache.get(key)`: the text stored, or None.
    fn get(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        self.start(py, Op::Get(key))
    }
    /// `await smpp.cache.set(key, value, ttl=seconds)`.
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: String,
        value: Bound<'_, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        self.start(py, Op::Set(key, value_text(&value)?, ttl_arg(ttl)?))
    }
    /// `await smpp.cache.incr(key, by=1, ttl=seconds)`: the new value (ttl set when the key is made).
    #[pyo3(signature = (key, by=1, ttl=None))]
    fn incr(&self, py: Python<'_>, key: String, by: i64, ttl: Option<f64>) -> PyResult<Py<PyAny>> {
        self.start(py, Op::Incr(key, by, ttl_arg(ttl)?))
    }
    /// `await smpp.cache.delete(key)`: whether it existed.
    fn delete(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        self.start(py, Op::Delete(key))
    }
}

// ---- check-config -------------------------------------------------------------------------------

/// Compile (not run) the script: a syntax error as `file:line: SyntaxError: message`.
pub fn check_script(path: &Path) -> Result<(), String> {
    let source = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = path.display().to_string();
    Python::with_gil(|py| {
        let compile = py.import("builtins")?.getattr("compile")?;
        let r = compile.call1((PyBytes::new(py, &source), shown.as_str(), "exec"));
        Ok::<_, PyErr>(r.map(|_| ()).map_err(|e| {
            let v = e.value(py);
            let line = v.getattr("lineno").ok().and_then(|l| l.extract::<i64>().ok());
            let msg = v
                .getattr("msg")
                .ok()
                .and_then(|m| m.extract::<String>().ok())
                .unwrap_or_else(|| e.to_string());
            let kind = v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "SyntaxError".into());
            match line {
                Some(l) => format!("{shown}:{l}: {kind}: {msg}"),
                None => format!("{shown}: {kind}: {msg}"),
            }
        }))
    })
    .map_err(|e: PyErr| format!("{shown}: {e}"))?
}

//! Waking the JavaScript thread from the workers: one libuv async handle per dispatcher,
//! on the loop of the JavaScript thread that made it.
//!
//! Why not a `ThreadsafeFunction`: Node's thread-safe function writes its eventfd while it
//! holds the mutex that the JavaScript thread takes to dispatch the call. The write wakes
//! the JavaScript thread, which then blocks on that mutex until the worker gets the CPU
//! back and lets go — a futex wait, a futex wake and two more context switches per
//! wake-up. With deliveries of a few moves each (native ingress, push rooms) that lock
//! convoy was ~15 % of the server's CPU (perf, `bench/ingress.ts` at 40k messages/s).
//! `uv_async_send` takes no lock: an atomic exchange, and the eventfd write only when no
//! wake-up is already pending. The outbox coalesces on top of that (one wake-up per batch
//! of news), so the JavaScript side runs once per wake-up.
//!
//! Lifetime. The handle lives on the JavaScript thread's loop and may be closed only there;
//! the workers reach it through [`Waker`], which reads it under a read lock and finds it
//! gone once [`JsWake::close`] has taken it (under the write lock, before `uv_close`), so
//! no worker ever touches a closing handle. It is closed when the dispatcher is finalized
//! ([`JsWake`] dropped) or, whichever comes first, by an async environment cleanup hook when
//! the environment goes away (process exit, worker thread termination). The hook is removed
//! only from the close callback, so Node keeps its loop running until the handle is fully
//! closed (an open handle at `uv_loop_close` would abort a worker thread's teardown).
//!
//! The callback is `napi_make_callback` on the global object inside a handle scope, as Node's
//! own thread-safe functions do: microtasks and `process.nextTick` callbacks run after it,
//! and a throw reaches `uncaughtException` (`napi_fatal_exception`). The handle is unref'd:
//! like a weak thread-safe function, it never keeps the process alive.
//!
//! libuv's functions are Node's own exported symbols (as `uv_run` is to `napi-sys`), resolved
//! when the addon loads, like every N-API function.
//!
//! # Safety
//! Raw N-API and libuv calls; each block says why it is sound.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::{Arc, PoisonError, RwLock};

use napi::{sys, Env, Error, Result, Status};

/// libuv's `UV_ASYNC` (`uv_handle_type`; stable since libuv 1.0).
const UV_ASYNC: c_int = 1;

unsafe extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_async_init(
        loop_: *mut sys::uv_loop_s,
        handle: *mut c_void,
        cb: unsafe extern "C" fn(*mut c_void),
    ) -> c_int;
    fn uv_async_send(handle: *mut c_void) -> c_int;
    fn uv_close(handle: *mut c_void, cb: unsafe extern "C" fn(*mut c_void));
    fn uv_unref(handle: *mut c_void);
}

/// The handle's address (or 0 once it is closing), shared with the workers.
#[derive(Default)]
struct Gate {
    handle: RwLock<usize>,
}

/// What the handle's callbacks need; its `data` field points here. Owned by the handle:
/// freed in [`on_close`].
struct HandleData {
    env: sys::napi_env,
    func: sys::napi_ref,
    async_context: sys::napi_async_context,
    cleanup: sys::napi_async_cleanup_hook_handle,
    /// The handle's memory (`uv_handle_size(UV_ASYNC)` bytes, 8-aligned).
    memory: Box<[u64]>,
    gate: Arc<Gate>,
}

/// The workers' side: wakes the JavaScript thread; a no-op once the handle is closing.
#[derive(Clone)]
pub struct Waker {
    gate: Arc<Gate>,
}

impl Waker {
    pub fn wake(&self) {
        let handle = self
            .gate
            .handle
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if *handle != 0 {
            // SAFETY: a non-zero address is an initialised async handle that is not closing:
            // `close` zeroes it under the write lock before `uv_close`, and this read lock
            // is held across the call. `uv_async_send` is the one libuv call documented as
            // safe from any thread.
            unsafe { uv_async_send(*handle as *mut c_void) };
        }
    }
}

/// The JavaScript thread's side: closes the handle when dropped (the dispatcher was
/// finalized). Not `Send`: it lives in the thread's core slab.
pub struct JsWake {
    gate: Arc<Gate>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl JsWake {
    /// A wake-up that calls `func` (a JavaScript function, no arguments) on this thread.
    ///
    /// # Errors
    /// An N-API or libuv failure setting it up.
    pub fn new(env: &Env, func: sys::napi_value) -> Result<(Self, Waker)> {
        let env = env.raw();
        let gate = Arc::new(Gate::default());
        let mut loop_ = ptr::null_mut();
        // SAFETY: `env` is the live environment of this call; `loop_` a valid out-pointer.
        let status = unsafe { sys::napi_get_uv_event_loop(env, &raw mut loop_) };
        check(status, "napi_get_uv_event_loop")?;
        // SAFETY: a pure libuv query.
        let size = unsafe { uv_handle_size(UV_ASYNC) };
        let mut func_ref = ptr::null_mut();
        // SAFETY: `func` is a function value of this call; one strong reference keeps it.
        let status = unsafe { sys::napi_create_reference(env, func, 1, &raw mut func_ref) };
        check(status, "napi_create_reference")?;
        let mut name = ptr::null_mut();
        let mut async_context = ptr::null_mut();
        // SAFETY: valid environment and out-pointers; the name is a NUL-terminated literal
        // (length -1: up to the NUL).
        let status = unsafe {
            match sys::napi_create_string_utf8(
                env,
                c"move-dispatcher:wake".as_ptr(),
                -1,
                &raw mut name,
            ) {
                sys::Status::napi_ok => {
                    sys::napi_async_init(env, ptr::null_mut(), name, &raw mut async_context)
                }
                s => s,
            }
        };
        if let Err(e) = check(status, "napi_async_init") {
            // SAFETY: the reference was created above and is not used again.
            unsafe { sys::napi_delete_reference(env, func_ref) };
            return Err(e);
        }
        let ctx = Box::into_raw(Box::new(HandleData {
            env,
            func: func_ref,
            async_context,
            cleanup: ptr::null_mut(),
            memory: vec![0u64; size.div_ceil(8)].into_boxed_slice(),
            gate: gate.clone(),
        }));
        // SAFETY: `ctx` was just leaked and is owned by the handle from here on. The handle
        // memory is `uv_handle_size(UV_ASYNC)` bytes, 8-aligned, and stays put (a boxed slice
        // is never moved) until `on_close` frees it. `data` is the first field of every
        // libuv handle (public API), set after `uv_async_init`, which does not touch it.
        unsafe {
            let handle = (*ctx).memory.as_mut_ptr().cast::<c_void>();
            if uv_async_init(loop_, handle, on_async) != 0 {
                let ctx = Box::from_raw(ctx);
                sys::napi_async_destroy(env, ctx.async_context);
                sys::napi_delete_reference(env, ctx.func);
                return Err(Error::new(Status::GenericFailure, "uv_async_init failed"));
            }
            *handle.cast::<*mut HandleData>() = ctx;
            uv_unref(handle);
            let status = sys::napi_add_async_cleanup_hook(
                env,
                Some(on_cleanup),
                ctx.cast(),
                &raw mut (*ctx).cleanup,
            );
            *gate.handle.write().unwrap_or_else(PoisonError::into_inner) = handle as usize;
            if status != sys::Status::napi_ok {
                (*ctx).cleanup = ptr::null_mut();
                close(&gate);
                return Err(Error::new(
                    Status::GenericFailure,
                    "napi_add_async_cleanup_hook failed",
                ));
            }
        }
        let waker = Waker { gate: gate.clone() };
        Ok((
            Self {
                gate,
                _not_send: std::marker::PhantomData,
            },
            waker,
        ))
    }
}

impl Drop for JsWake {
    fn drop(&mut self) {
        close(&self.gate);
    }
}

/// Takes the handle from the workers and closes it (on the JavaScript thread; idempotent).
fn close(gate: &Gate) {
    let handle = std::mem::take(&mut *gate.handle.write().unwrap_or_else(PoisonError::into_inner));
    if handle != 0 {
        // SAFETY: a non-zero address is an open handle of this thread's loop (only this
        // thread ever closes it, and only once: the address was taken above); no worker
        // can reach it any more.
        unsafe { uv_close(handle as *mut c_void, on_close) };
    }
}

/// The handle's callback, on the JavaScript thread: calls the wake function.
unsafe extern "C" fn on_async(handle: *mut c_void) {
    // SAFETY: libuv passes the handle initialised in `JsWake::new`, whose `data` is its
    // `HandleData`, alive until `on_close`; this runs on the loop's (JavaScript) thread, where the
    // environment is live, inside no other handle scope of ours.
    unsafe {
        let ctx = &**handle.cast::<*mut HandleData>();
        let env = ctx.env;
        let mut scope = ptr::null_mut();
        if sys::napi_open_handle_scope(env, &raw mut scope) != sys::Status::napi_ok {
            return;
        }
        let (mut func, mut global, mut result) =
            (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        if sys::napi_get_reference_value(env, ctx.func, &raw mut func) == sys::Status::napi_ok
            && !func.is_null()
            && sys::napi_get_global(env, &raw mut global) == sys::Status::napi_ok
        {
            let status = sys::napi_make_callback(
                env,
                ctx.async_context,
                global,
                func,
                0,
                ptr::null(),
                &raw mut result,
            );
            if status == sys::Status::napi_pending_exception {
                let mut error = ptr::null_mut();
                if sys::napi_get_and_clear_last_exception(env, &raw mut error)
                    == sys::Status::napi_ok
                {
                    sys::napi_fatal_exception(env, error);
                }
            }
        }
        sys::napi_close_handle_scope(env, scope);
    }
}

/// The handle is closed: free it, and let the environment's teardown go on.
unsafe extern "C" fn on_close(handle: *mut c_void) {
    // SAFETY: the handle of `JsWake::new`, now closed (libuv is done with its memory);
    // its `HandleData` is reclaimed exactly once, here, and its N-API objects released on the
    // JavaScript thread.
    unsafe {
        let ctx = Box::from_raw(*handle.cast::<*mut HandleData>());
        sys::napi_async_destroy(ctx.env, ctx.async_context);
        sys::napi_delete_reference(ctx.env, ctx.func);
        if !ctx.cleanup.is_null() {
            sys::napi_remove_async_cleanup_hook(ctx.cleanup);
        }
        drop(ctx);
    }
}

/// The environment is going away: close the handle if the dispatcher has not already.
unsafe extern "C" fn on_cleanup(_remove: sys::napi_async_cleanup_hook_handle, arg: *mut c_void) {
    // SAFETY: `arg` is the `HandleData` registered with the hook; the hook is removed in `on_close`,
    // so while it can run the `HandleData` (and its gate) is alive.
    let ctx = unsafe { &*arg.cast::<HandleData>() };
    close(&ctx.gate);
}

fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::new(
            Status::GenericFailure,
            format!("{what} failed ({status})"),
        ))
    }
}

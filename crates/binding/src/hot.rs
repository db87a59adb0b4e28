//! The hot path's three exports — `dispatch`, `dispatchFrom`, `dispatchStream` — as plain
//! N-API callbacks instead of `#[napi]` functions.
//!
//! A socket handler makes one of these calls per frame, so their fixed cost is what "one
//! frame per call" pays on the JavaScript thread. The `#[napi]` wrapper adds, per call, a
//! native-borrow scope (opened, checked, closed), argument conversions through generic
//! traits and a `catch_unwind` frame; here each call is the N-API calls it needs and no
//! more: `napi_get_cb_info`, one `napi_get_value_*` per number, one
//! `napi_get_typedarray_info` per byte view, and one `napi_create_uint32` for the answer
//! (measured in `bench/permessage.ts`: the wrapper's own share was ~0.1 µs of a one-frame
//! call).
//!
//! Contract (the TypeScript layer, `src/native.ts`, is the only caller, and checks its
//! arguments first): `dispatch(id, frame)`, `dispatchFrom(id, frame, sender)`,
//! `dispatchStream(id, chunk, sender, out)`, where `frame`/`chunk` are `Uint8Array`s and
//! `out` is a `Float64Array` of at least 4. Anything else throws a `TypeError`; a panic
//! (a bug of this crate) throws an `Error` instead of unwinding into Node.
//!
//! # Safety
//! Every function here is `unsafe extern "C"` because N-API calls it with the environment
//! and callback info of a live call on the JavaScript thread; the byte views are borrowed
//! for that call only (see [`bytes`]).

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use napi::sys;
use napi::Env;

use move_dispatcher::core::Core;
use move_dispatcher::verdict::Verdict;

use crate::with_core;

/// The calling convention of this module (the `hotPath` export): 2 — verdicts carry
/// `WAKE_DUE`, `dispatchStream`'s flags carry 4.
pub const HOT_PATH_VERSION: u32 = 2;

/// Registers the three callbacks on the module's exports.
///
/// # Errors
/// An N-API failure creating or setting a function (the module then fails to load).
pub fn register(env: Env, exports: sys::napi_value) -> napi::Result<()> {
    let fns: [(&CStr, sys::napi_callback); 3] = [
        (c"dispatch", Some(dispatch)),
        (c"dispatchFrom", Some(dispatch_from)),
        (c"dispatchStream", Some(dispatch_stream)),
    ];
    // What `src/native.ts` checks before it relies on the `WAKE_DUE` answers.
    let mut version = ptr::null_mut();
    // SAFETY: `env` is the registration's environment; `version` a valid out-pointer.
    let status = unsafe { sys::napi_create_uint32(env.raw(), HOT_PATH_VERSION, &raw mut version) };
    check(status, c"hotPath")?;
    // SAFETY: `exports` is the module's exports object, alive for this call; the name is a
    // NUL-terminated static string.
    let status =
        unsafe { sys::napi_set_named_property(env.raw(), exports, c"hotPath".as_ptr(), version) };
    check(status, c"hotPath")?;
    for (name, cb) in fns {
        let mut f = ptr::null_mut();
        let len = isize::try_from(name.count_bytes()).unwrap_or(isize::MAX);
        // SAFETY: `env` is the environment of the module's registration, on its thread;
        // `name` is a static string of `len` bytes, `cb` a function with the N-API
        // callback signature, and `f` a valid out-pointer.
        let status = unsafe {
            sys::napi_create_function(
                env.raw(),
                name.as_ptr(),
                len,
                cb,
                ptr::null_mut(),
                &raw mut f,
            )
        };
        check(status, name)?;
        // SAFETY: `exports` is the module's exports object handed to the registration
        // hook, alive for this call; `name` as above; `f` was just created.
        let status = unsafe { sys::napi_set_named_property(env.raw(), exports, name.as_ptr(), f) };
        check(status, name)?;
    }
    Ok(())
}

fn check(status: sys::napi_status, name: &CStr) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_reason(format!(
            "move-dispatcher: could not export {} (napi status {status})",
            name.to_string_lossy()
        )))
    }
}

/// Throws a `TypeError` (or an `Error` for a panic) and returns `undefined`'s stand-in.
///
/// # Safety
/// `env` is the environment of a live callback on the JavaScript thread.
unsafe fn throw(env: sys::napi_env, type_error: bool, message: &CStr) -> sys::napi_value {
    let code: *const c_char = c"ERR_MOVE_DISPATCHER_INVALID_ARGUMENT".as_ptr();
    // SAFETY: per this function's contract; both strings are NUL-terminated statics. A
    // failure to throw (an exception already pending) leaves that exception in place.
    unsafe {
        if type_error {
            sys::napi_throw_type_error(env, code, message.as_ptr());
        } else {
            sys::napi_throw_error(env, ptr::null(), message.as_ptr());
        }
    }
    ptr::null_mut()
}

/// The call's first `N` arguments (missing ones read as `undefined`).
///
/// # Safety
/// `env` and `info` are those N-API passed to a live callback.
unsafe fn args<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Option<[sys::napi_value; N]> {
    let mut argv = [ptr::null_mut(); N];
    let mut count = N;
    // SAFETY: per this function's contract; `argv` has room for `count` values.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &raw mut count,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    (status == sys::Status::napi_ok).then_some(argv)
}

/// A `u32` argument (a JavaScript number; fractions truncated as N-API does).
///
/// # Safety
/// `env` is a live callback's environment and `v` one of its arguments.
unsafe fn u32_arg(env: sys::napi_env, v: sys::napi_value) -> Option<u32> {
    let mut out = 0u32;
    // SAFETY: per this function's contract; `out` is a valid out-pointer.
    let status = unsafe { sys::napi_get_value_uint32(env, v, &raw mut out) };
    (status == sys::Status::napi_ok).then_some(out)
}

/// An `f64` argument.
///
/// # Safety
/// As [`u32_arg`].
unsafe fn f64_arg(env: sys::napi_env, v: sys::napi_value) -> Option<f64> {
    let mut out = 0f64;
    // SAFETY: per this function's contract; `out` is a valid out-pointer.
    let status = unsafe { sys::napi_get_value_double(env, v, &raw mut out) };
    (status == sys::Status::napi_ok).then_some(out)
}

/// The memory of a typed array of `kind`: its first element and its length in elements.
///
/// # Safety
/// As [`u32_arg`].
unsafe fn typed(
    env: sys::napi_env,
    v: sys::napi_value,
    kind: sys::napi_typedarray_type,
) -> Option<(*mut c_void, usize)> {
    let mut t = 0;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    // SAFETY: per this function's contract; every out-pointer is valid, and the array
    // buffer and offset outputs are optional (null).
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            v,
            &raw mut t,
            &raw mut len,
            &raw mut data,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    (status == sys::Status::napi_ok && t == kind).then_some((data, len))
}

/// A `Uint8Array` argument's bytes, for the call.
///
/// # Safety
/// As [`u32_arg`]; the slice must not outlive the callback. It is sound for that long:
/// N-API's `data` already points at the view's first byte, `len` bytes are in bounds of
/// its buffer, JavaScript is blocked in this call (nothing on this thread can detach,
/// resize or write the buffer meanwhile), and the buffers this addon hands out (delivery
/// `ArrayBuffer`s) are written by no thread while JavaScript can reach them.
///
/// One case is outside that argument: a view over a `SharedArrayBuffer` that another
/// JavaScript thread writes *during* the call (the caller racing itself). Telling such a
/// view apart would cost every call a materialised `ArrayBuffer`. Every read of the slice
/// is bounds-checked, the checks made at dispatch use a copy of the header
/// (`snapshot_header`) that goes into the arena with the bytes copied after it, and the
/// worker validates that copy: a concurrent write can change which verdict a frame gets
/// (or stop a stream as malformed), never make Rust read past the view or store bytes other
/// than those it checked. It is formally a data race on `u8`s, documented
/// (docs/architecture.md, "Shared memory").
unsafe fn bytes<'a>(env: sys::napi_env, v: sys::napi_value) -> Option<&'a [u8]> {
    // SAFETY: per this function's contract.
    let (data, len) = unsafe { typed(env, v, sys::TypedarrayType::uint8_array) }?;
    if len == 0 || data.is_null() {
        return Some(&[]);
    }
    // SAFETY: see the function's documentation.
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// The answer, as a JavaScript number.
///
/// # Safety
/// As [`u32_arg`].
unsafe fn answer(env: sys::napi_env, n: u32) -> sys::napi_value {
    let mut out = ptr::null_mut();
    // SAFETY: per this function's contract; `out` is a valid out-pointer.
    unsafe { sys::napi_create_uint32(env, n, &raw mut out) };
    out
}

/// Runs `f` on core `id` (`None` if there is none), a panic turned into `Err`.
fn on_core<R>(id: u32, f: impl FnOnce(&mut Core) -> R) -> Result<Option<R>, ()> {
    catch_unwind(AssertUnwindSafe(|| with_core(id, f))).map_err(|_| ())
}

const BAD_DISPATCH: &CStr = c"dispatch(id, frame): id must be a number and frame a Uint8Array";
const BAD_STREAM: &CStr =
    c"dispatchStream(id, chunk, sender, out): id and sender must be numbers, chunk a Uint8Array and out a Float64Array of 4";
const PANIC: &CStr = c"move-dispatcher: internal error in dispatch (a bug: please report it)";

/// `dispatch(id, frame)` / `dispatchFrom(id, frame, sender)`: a `Verdict` (`Closed` if the
/// core is gone), plus `WAKE_DUE` (0x100) when the caller must schedule `wakeOwed(id)`
/// ([`Core::wake_due`]).
///
/// # Safety
/// Called by N-API only, with a live call's `env` and `info`.
unsafe fn dispatch_impl(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    from: bool,
) -> sys::napi_value {
    // SAFETY: the whole body: `env` and `info` are a live call's (this function's
    // contract); `frame` is used within the call only.
    unsafe {
        let Some([id, frame, sender]) = args::<3>(env, info) else {
            return throw(env, true, BAD_DISPATCH);
        };
        let (Some(id), Some(frame)) = (u32_arg(env, id), bytes(env, frame)) else {
            return throw(env, true, BAD_DISPATCH);
        };
        let sender = if from {
            let Some(s) = u32_arg(env, sender) else {
                return throw(env, true, BAD_DISPATCH);
            };
            Some(s)
        } else {
            None
        };
        match on_core(id, |c| (c.dispatch(frame, sender), c.wake_due())) {
            Ok(Some((v, due))) => answer(env, v as u32 | u32::from(due) << 8),
            Ok(None) => answer(env, Verdict::Closed as u32),
            Err(()) => throw(env, false, PANIC),
        }
    }
}

/// # Safety
/// See [`dispatch_impl`].
unsafe extern "C" fn dispatch(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: N-API calls this with a live call's `env` and `info`.
    unsafe { dispatch_impl(env, info, false) }
}

/// # Safety
/// See [`dispatch_impl`].
unsafe extern "C" fn dispatch_from(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: N-API calls this with a live call's `env` and `info`.
    unsafe { dispatch_impl(env, info, true) }
}

/// `dispatchStream(id, chunk, sender, out)`: dispatches back-to-back frames (`sender < 0`:
/// no sender check), writes `[consumed, accepted, rejected, flags]` (flags: 1 backpressure,
/// 2 malformed, 4 the caller must schedule `wakeOwed(id)`) into `out` — the engine's private `Float64Array`, cheaper than an object
/// made through N-API — and returns the frames accepted.
///
/// # Safety
/// Called by N-API only, with a live call's `env` and `info`.
unsafe extern "C" fn dispatch_stream(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: the whole body: `env` and `info` are a live call's; `chunk` and `out` are
    // used within the call only (see also the comment on `out` below).
    unsafe {
        let Some([id, chunk, sender, out]) = args::<4>(env, info) else {
            return throw(env, true, BAD_STREAM);
        };
        let (Some(id), Some(chunk), Some(sender), Some((out, out_len))) = (
            u32_arg(env, id),
            bytes(env, chunk),
            f64_arg(env, sender),
            typed(env, out, sys::TypedarrayType::float64_array),
        ) else {
            return throw(env, true, BAD_STREAM);
        };
        if out_len < 4 || out.is_null() {
            return throw(env, true, BAD_STREAM);
        }
        let sender = if sender >= 0.0 && sender <= f64::from(u32::MAX) {
            #[expect(
                clippy::cast_sign_loss,
                clippy::cast_possible_truncation,
                reason = "range checked above"
            )]
            Some(sender as u32)
        } else {
            None
        };
        let (o, due) = match on_core(id, |c| (c.dispatch_stream(chunk, sender), c.wake_due())) {
            Ok(o) => o.unwrap_or_default(),
            Err(()) => return throw(env, false, PANIC),
        };
        let flags = u8::from(o.backpressure) | (u8::from(o.malformed) << 1) | (u8::from(due) << 2);
        #[expect(clippy::cast_precision_loss, reason = "buffer lengths are below 2^53")]
        let fields = [
            o.consumed as f64,
            f64::from(o.accepted),
            f64::from(o.rejected),
            f64::from(flags),
        ];
        // `out` is the engine's private Float64Array (src/native.ts), never shared with
        // another thread, and JavaScript is blocked in this call: nothing else reads or
        // writes it meanwhile. It holds at least 4 aligned f64s (checked above; a
        // Float64Array's data is 8-byte aligned).
        let out = std::slice::from_raw_parts_mut(out.cast::<f64>(), 4);
        out.copy_from_slice(&fields);
        answer(env, o.accepted)
    }
}

//! The engine path on Apple hosts: `_ANEInMemoryModelDescriptor` →
//! `_ANEInMemoryModel` (compile, load), `_ANEIOSurfaceObject` +
//! `_ANERequest` (evaluate), unload on drop. The call sequence is the one
//! ane-anchors §4 reconstructs from the public projects that drive it; the
//! framework is private, so every class is looked up at run time and a
//! missing one is an `Unavailable` error, never a crash.
//!
//! Type-checked for aarch64-apple-darwin; not run on hardware here.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::OnceLock;

use objc2::rc::Retained;
use objc2::runtime::{AnyClass, AnyObject, Bool};
use objc2::msg_send;
use objc2_core_foundation::CFDictionary;
use objc2_foundation::{NSArray, NSData, NSDictionary, NSError, NSNumber, NSString};
use objc2_io_surface::{IOSurfaceLockOptions, IOSurfaceRef};

use crate::{AneError, Surfaces};

const FRAMEWORK: &str = "/System/Library/PrivateFrameworks/AppleNeuralEngine.framework/AppleNeuralEngine";
/// Quality of service for compile, load and evaluate (any value 0–63
/// behaves the same; 21 is what most callers use).
const QOS: u32 = 21;

struct Framework {
    // Kept open for the life of the process: the classes live in it.
    _lib: libloading::Library,
}

fn framework() -> Result<&'static Framework, String> {
    static FW: OnceLock<Result<Framework, String>> = OnceLock::new();
    FW.get_or_init(|| {
        // SAFETY: loading a system framework runs its initialisers, which
        // is what every client of the framework does.
        let lib = unsafe { libloading::Library::new(FRAMEWORK) }.map_err(|e| format!("cannot load {FRAMEWORK}: {e}"))?;
        Ok(Framework { _lib: lib })
    })
    .as_ref()
    .map_err(|e| e.clone())
}

fn class(name: &str) -> Result<&'static AnyClass, String> {
    framework()?;
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    AnyClass::get(&c).ok_or_else(|| format!("class {name} is missing from AppleNeuralEngine.framework (a macOS change?)"))
}

const CLASSES: [&str; 4] = ["_ANEInMemoryModelDescriptor", "_ANEInMemoryModel", "_ANERequest", "_ANEIOSurfaceObject"];

pub fn available() -> bool {
    cfg!(target_os = "macos") && cfg!(target_arch = "aarch64") && CLASSES.iter().all(|c| class(c).is_ok())
}

pub fn unavailable_reason() -> String {
    if !(cfg!(target_os = "macos") && cfg!(target_arch = "aarch64")) {
        return "backend=\"ane\" needs macOS on Apple silicon; use backend=\"sim\"".into();
    }
    match CLASSES.iter().map(|c| class(c)).find_map(Result::err) {
        Some(e) => format!("backend=\"ane\" is unavailable: {e}; use backend=\"sim\""),
        None => "backend=\"ane\" is unavailable".into(),
    }
}

/// A flat IOSurface of `bytes` bytes (Width = bytes, Height = 1, one byte
/// per element), the layout every direct caller of the engine uses.
struct Surface {
    obj: Retained<AnyObject>,
    bytes: usize,
}

impl Surface {
    fn new(bytes: usize) -> Result<Surface, AneError> {
        let n = |v: usize| NSNumber::new_usize(v);
        let keys = [
            NSString::from_str("IOSurfaceWidth"),
            NSString::from_str("IOSurfaceHeight"),
            NSString::from_str("IOSurfaceBytesPerElement"),
            NSString::from_str("IOSurfaceBytesPerRow"),
            NSString::from_str("IOSurfaceAllocSize"),
            NSString::from_str("IOSurfacePixelFormat"),
        ];
        let vals = [n(bytes), n(1), n(1), n(bytes), n(bytes), n(0)];
        let k: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
        let v: Vec<&NSNumber> = vals.iter().map(|v| &**v).collect();
        let props = NSDictionary::from_slices(&k, &v);
        // SAFETY: NSDictionary is toll-free bridged to CFDictionary.
        let cf: &CFDictionary = unsafe { &*(Retained::as_ptr(&props) as *const CFDictionary) };
        // SAFETY: the properties are a valid dictionary of numbers.
        let s = unsafe { IOSurfaceRef::new(cf) }.ok_or_else(|| AneError::Eval(format!("IOSurfaceCreate failed for {bytes} bytes")))?;
        let cls = class("_ANEIOSurfaceObject").map_err(AneError::Unavailable)?;
        let raw: *const IOSurfaceRef = &*s;
        // SAFETY: objectWithIOSurface: takes an IOSurfaceRef and retains it.
        let obj: Option<Retained<AnyObject>> = unsafe { msg_send![cls, objectWithIOSurface: raw as *mut c_void] };
        let obj = obj.ok_or_else(|| AneError::Eval("_ANEIOSurfaceObject objectWithIOSurface: returned nil".into()))?;
        Ok(Surface { obj, bytes })
    }

    fn surface(&self) -> Result<&IOSurfaceRef, AneError> {
        // SAFETY: -ioSurface returns the IOSurfaceRef the object holds (or
        // NULL), alive as long as the object.
        let p: *mut c_void = unsafe { msg_send![&*self.obj, ioSurface] };
        NonNull::new(p).map(|p| unsafe { &*(p.as_ptr() as *const IOSurfaceRef) }).ok_or_else(|| AneError::Eval("surface object holds no IOSurface".into()))
    }

    fn write(&self, data: &[u8]) -> Result<(), AneError> {
        let s = self.surface()?;
        let n = data.len().min(self.bytes);
        // SAFETY: locked for CPU access; the base address spans alloc_size
        // ≥ self.bytes bytes.
        unsafe {
            s.lock(IOSurfaceLockOptions::empty(), std::ptr::null_mut());
            std::ptr::copy_nonoverlapping(data.as_ptr(), s.base_address().as_ptr() as *mut u8, n);
            s.unlock(IOSurfaceLockOptions::empty(), std::ptr::null_mut());
        }
        Ok(())
    }

    fn read(&self) -> Result<Vec<u8>, AneError> {
        let s = self.surface()?;
        let mut out = vec![0u8; self.bytes];
        // SAFETY: as in `write`, read-only lock.
        unsafe {
            s.lock(IOSurfaceLockOptions::ReadOnly, std::ptr::null_mut());
            std::ptr::copy_nonoverlapping(s.base_address().as_ptr() as *const u8, out.as_mut_ptr(), self.bytes);
            s.unlock(IOSurfaceLockOptions::ReadOnly, std::ptr::null_mut());
        }
        Ok(out)
    }
}

/// A compiled and loaded `_ANEInMemoryModel`, unloaded on drop.
pub struct Loaded {
    model: Retained<AnyObject>,
}

// SAFETY: the model object is only messaged through &self methods that the
// framework documents (by use) as callable from any thread; ANEForge
// serialises calls per Net.
unsafe impl Send for Loaded {}
unsafe impl Sync for Loaded {}

fn err_text(e: *mut NSError) -> String {
    if e.is_null() {
        return "no error detail".into();
    }
    // SAFETY: a non-null out-error is a valid autoreleased NSError.
    unsafe { (*e).localizedDescription().to_string() }
}

fn empty_dict() -> Retained<NSDictionary<NSString, AnyObject>> {
    NSDictionary::new()
}

pub fn compile(mil: &str, weights: &[(String, Vec<u8>)], _: &Surfaces) -> Result<Loaded, AneError> {
    let unavailable = AneError::Unavailable;
    let desc_cls = class("_ANEInMemoryModelDescriptor").map_err(unavailable)?;
    let model_cls = class("_ANEInMemoryModel").map_err(AneError::Unavailable)?;
    let text = NSData::with_bytes(mil.as_bytes());
    // {"@model_path/weights/<f>": {"offset": 0, "data": NSData}}; an empty
    // dictionary, not nil, when there are no weights.
    let mut keys: Vec<Retained<NSString>> = vec![];
    let mut entries: Vec<Retained<NSDictionary<NSString, AnyObject>>> = vec![];
    for (name, bytes) in weights {
        keys.push(NSString::from_str(&format!("@model_path/weights/{name}")));
        let data = NSData::with_bytes(bytes);
        let off = NSNumber::new_usize(0);
        let k = [NSString::from_str("offset"), NSString::from_str("data")];
        let kr: Vec<&NSString> = k.iter().map(|k| &**k).collect();
        let vr: [&AnyObject; 2] = [off.as_ref(), data.as_ref()];
        entries.push(NSDictionary::from_slices(&kr, &vr));
    }
    let kr: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
    let vr: Vec<&AnyObject> = entries.iter().map(|e| e.as_ref()).collect();
    let wdict: Retained<NSDictionary<NSString, AnyObject>> = NSDictionary::from_slices(&kr, &vr);
    // SAFETY: class methods of the private framework, with the argument
    // types every known caller passes (NSData UTF-8 text, NSDictionary,
    // nil options).
    let desc: Option<Retained<AnyObject>> = unsafe {
        msg_send![desc_cls, modelWithMILText: &*text, weights: &*wdict, optionsPlist: std::ptr::null::<AnyObject>()]
    };
    let desc = desc.ok_or_else(|| AneError::Compile("the descriptor refused the MIL text (modelWithMILText: returned nil)".into()))?;
    let model: Option<Retained<AnyObject>> = unsafe { msg_send![model_cls, inMemoryModelWithDescriptor: &*desc] };
    let model = model.ok_or_else(|| AneError::Compile("inMemoryModelWithDescriptor: returned nil".into()))?;

    // The wrapper does not reliably write its own files: pre-create
    // NSTemporaryDirectory()/<hexStringIdentifier>/{model.mil, weights/}.
    let hex: Option<Retained<NSString>> = unsafe { msg_send![&*model, hexStringIdentifier] };
    if let Some(hex) = hex {
        let dir = std::env::temp_dir().join(hex.to_string());
        let wdir = dir.join("weights");
        std::fs::create_dir_all(&wdir).map_err(|e| AneError::Compile(format!("{}: {e}", wdir.display())))?;
        std::fs::write(dir.join("model.mil"), mil).map_err(|e| AneError::Compile(e.to_string()))?;
        for (name, bytes) in weights {
            std::fs::write(wdir.join(name), bytes).map_err(|e| AneError::Compile(e.to_string()))?;
        }
    }
    let opts = empty_dict();
    let mut err: *mut NSError = std::ptr::null_mut();
    let ok: Bool = unsafe { msg_send![&*model, compileWithQoS: QOS, options: &*opts, error: &mut err] };
    if !ok.as_bool() {
        return Err(AneError::Compile(format!("compileWithQoS: {}", err_text(err))));
    }
    let mut err: *mut NSError = std::ptr::null_mut();
    let mut ok: Bool = unsafe { msg_send![&*model, loadWithQoS: QOS, options: &*opts, error: &mut err] };
    if !ok.as_bool() {
        // The daemon sometimes needs a moment after a compile.
        std::thread::sleep(std::time::Duration::from_millis(100));
        err = std::ptr::null_mut();
        ok = unsafe { msg_send![&*model, loadWithQoS: QOS, options: &*opts, error: &mut err] };
        if !ok.as_bool() {
            return Err(AneError::Compile(format!("loadWithQoS: {}", err_text(err))));
        }
    }
    Ok(Loaded { model })
}

pub fn eval(m: &Loaded, inputs: &[Vec<u8>], s: &Surfaces) -> Result<Vec<Vec<u8>>, AneError> {
    let req_cls = class("_ANERequest").map_err(AneError::Unavailable)?;
    let ins: Vec<Surface> = inputs.iter().map(|_| Surface::new(s.input_bytes)).collect::<Result<_, _>>()?;
    for (surf, data) in ins.iter().zip(inputs) {
        surf.write(data)?;
    }
    let outs: Vec<Surface> = (0..s.outputs).map(|_| Surface::new(s.output_bytes)).collect::<Result<_, _>>()?;
    let idx = |n: usize| -> Retained<NSArray<NSNumber>> {
        let v: Vec<Retained<NSNumber>> = (0..n).map(NSNumber::new_usize).collect();
        NSArray::from_retained_slice(&v)
    };
    let in_objs: Vec<&AnyObject> = ins.iter().map(|x| &*x.obj).collect();
    let out_objs: Vec<&AnyObject> = outs.iter().map(|x| &*x.obj).collect();
    let in_arr = NSArray::from_slice(&in_objs);
    let out_arr = NSArray::from_slice(&out_objs);
    let (in_idx, out_idx) = (idx(ins.len()), idx(outs.len()));
    let zero = NSNumber::new_usize(0);
    // SAFETY: the request factory with the argument types known callers use.
    let req: Option<Retained<AnyObject>> = unsafe {
        msg_send![req_cls, requestWithInputs: &*in_arr, inputIndices: &*in_idx, outputs: &*out_arr, outputIndices: &*out_idx,
            weightsBuffer: std::ptr::null::<AnyObject>(), perfStats: std::ptr::null::<AnyObject>(), procedureIndex: &*zero]
    };
    let req = req.ok_or_else(|| AneError::Eval("_ANERequest requestWithInputs: returned nil".into()))?;
    let opts = empty_dict();
    let mut err: *mut NSError = std::ptr::null_mut();
    let ok: Bool = unsafe { msg_send![&*m.model, evaluateWithQoS: QOS, options: &*opts, request: &*req, error: &mut err] };
    if !ok.as_bool() {
        return Err(AneError::Eval(format!("evaluateWithQoS: {}", err_text(err))));
    }
    outs.iter().map(Surface::read).collect()
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let mut err: *mut NSError = std::ptr::null_mut();
        // SAFETY: unloading a loaded model; failure only leaks daemon-side.
        let _: Bool = unsafe { msg_send![&*self.model, unloadWithQoS: QOS, error: &mut err] };
    }
}

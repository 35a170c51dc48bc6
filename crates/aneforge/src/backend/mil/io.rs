//! The engine's I/O plan: how a program's ports become IOSurface buffers.
//!
//! The rules are the ones every project driving the engine directly ran
//! into (ane-anchors §4), and none of them is visible to the user:
//!
//! * every port is fp16;
//! * each surface is at least [`MIN_SURFACE_BYTES`] (smaller ones fail at
//!   evaluation with status 0x1d);
//! * all input surfaces have one size, and all output surfaces one size
//!   (the largest port of each side, rounded up);
//! * surfaces bind in the alphabetical order of the ports' MIL names, not
//!   the declaration order;
//! * the last axis of each port is padded to a 64-byte row stride, which is
//!   how the engine lays a tensor out in memory.
//!
//! [`IoPlan::pack`] and [`IoPlan::unpack`] do the conversion (host values
//! ↔ padded fp16 rows) on the way in and out. The sim does not use them;
//! the `ane` backend does.

use half::f16;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fact::Fact;

/// Smallest IOSurface the engine evaluates with (48 KiB).
pub const MIN_SURFACE_BYTES: usize = 49_152;
/// Row alignment of the engine's tensor layout.
pub const ROW_ALIGN: usize = 64;
/// Bytes per element on a port (fp16).
pub const PORT_ELEM_BYTES: usize = 2;

/// One port's place in the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PortPlan {
    /// The graph's port name (what `net(...)` takes and returns).
    pub name: String,
    /// The MIL identifier (what the engine binds by).
    pub mil_name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// The dtype the user sees; the port itself is always fp16.
    pub host_dtype: DType,
    /// Position in the engine's binding order (alphabetical by MIL name).
    pub binding: usize,
    /// Elements in the last axis.
    pub row_elems: usize,
    /// Bytes from one row to the next (row_elems·2 rounded up to 64).
    pub row_stride: usize,
    /// Number of rows (product of all but the last axis).
    pub rows: usize,
    /// Bytes the port's data occupies in its surface.
    pub bytes: usize,
}

/// Inputs and outputs, each in binding order, with the common surface size
/// of each side.
#[derive(Clone, Debug, PartialEq)]
pub struct IoPlan {
    pub inputs: Vec<PortPlan>,
    pub outputs: Vec<PortPlan>,
    pub input_surface_bytes: usize,
    pub output_surface_bytes: usize,
}

fn round_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

fn side(ports: &[(String, String, Fact)]) -> Result<(Vec<PortPlan>, usize)> {
    let mut v: Vec<PortPlan> = ports
        .iter()
        .map(|(name, mil_name, fact)| {
            let row_elems = fact.shape.last().copied().unwrap_or(1);
            let rows: usize = fact.shape.iter().rev().skip(1).product();
            let row_stride = round_up(row_elems.checked_mul(PORT_ELEM_BYTES).ok_or_else(|| overflow(name))?, ROW_ALIGN);
            let bytes = rows.checked_mul(row_stride).ok_or_else(|| overflow(name))?;
            Ok(PortPlan {
                name: name.clone(),
                mil_name: mil_name.clone(),
                shape: fact.shape.clone(),
                host_dtype: fact.dtype,
                binding: 0,
                row_elems,
                row_stride,
                rows,
                bytes,
            })
        })
        .collect::<Result<_>>()?;
    v.sort_by(|a, b| a.mil_name.as_bytes().cmp(b.mil_name.as_bytes()));
    for (k, p) in v.iter_mut().enumerate() {
        p.binding = k;
    }
    let size = v.iter().map(|p| p.bytes).max().unwrap_or(0).max(MIN_SURFACE_BYTES);
    Ok((v, round_up(size, ROW_ALIGN)))
}

fn overflow(name: &str) -> Error {
    Error::Memory { op: "io_plan".into(), msg: format!("port {name:?} is too large to lay out") }
}

impl IoPlan {
    /// Plans `(graph name, MIL name, fact)` ports of each side.
    pub fn new(inputs: &[(String, String, Fact)], outputs: &[(String, String, Fact)]) -> Result<IoPlan> {
        let (inputs, input_surface_bytes) = side(inputs)?;
        let (outputs, output_surface_bytes) = side(outputs)?;
        Ok(IoPlan { inputs, outputs, input_surface_bytes, output_surface_bytes })
    }

    /// The input port called `name` (graph name).
    pub fn input(&self, name: &str) -> Option<&PortPlan> {
        self.inputs.iter().find(|p| p.name == name)
    }

    /// The output port called `name` (graph name).
    pub fn output(&self, name: &str) -> Option<&PortPlan> {
        self.outputs.iter().find(|p| p.name == name)
    }

    /// Writes `values` (row-major, the port's logical shape) into `surface`
    /// as padded fp16 rows; padding bytes are zeroed. Integer and bool
    /// values travel as integer-valued fp16 (the program casts them).
    pub fn pack(port: &PortPlan, values: &[f32], surface: &mut [u8]) -> Result<()> {
        let n = port.rows * port.row_elems;
        if values.len() != n {
            return Err(Error::value("pack", format!("port {:?} needs {n} values, got {}", port.name, values.len())));
        }
        if surface.len() < port.bytes {
            return Err(Error::value("pack", format!("surface of {} bytes is smaller than port {:?} ({} bytes)", surface.len(), port.name, port.bytes)));
        }
        surface.fill(0);
        for (r, row) in values.chunks(port.row_elems.max(1)).enumerate() {
            let dst = &mut surface[r * port.row_stride..r * port.row_stride + port.row_elems * PORT_ELEM_BYTES];
            for (d, &v) in dst.chunks_exact_mut(PORT_ELEM_BYTES).zip(row) {
                d.copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        Ok(())
    }

    /// Reads a port's values back from its surface (the inverse of
    /// [`IoPlan::pack`]), as f32, converted to the host dtype's values:
    /// integers rounded and saturated, bools as 0/1.
    pub fn unpack(port: &PortPlan, surface: &[u8]) -> Result<Vec<f32>> {
        if surface.len() < port.bytes {
            return Err(Error::value("unpack", format!("surface of {} bytes is smaller than port {:?} ({} bytes)", surface.len(), port.name, port.bytes)));
        }
        let mut out = Vec::with_capacity(port.rows * port.row_elems);
        for r in 0..port.rows {
            let src = &surface[r * port.row_stride..r * port.row_stride + port.row_elems * PORT_ELEM_BYTES];
            out.extend(src.chunks_exact(PORT_ELEM_BYTES).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()));
        }
        match port.host_dtype {
            DType::Bool => out.iter_mut().for_each(|v| *v = (*v != 0.0) as u8 as f32),
            d => {
                if let Some((lo, hi)) = d.int_range() {
                    out.iter_mut().for_each(|v| *v = v.round_ties_even().clamp(lo, hi));
                }
            }
        }
        Ok(out)
    }

    /// Allocates and fills every input surface, in binding order, from the
    /// values of each port given by graph name.
    pub fn pack_inputs(&self, values: &[(&str, &[f32])]) -> Result<Vec<Vec<u8>>> {
        self.inputs
            .iter()
            .map(|p| {
                let v = values
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .ok_or_else(|| Error::value("pack", format!("no value for input {:?}", p.name)))?;
                let mut s = vec![0u8; self.input_surface_bytes];
                IoPlan::pack(p, v.1, &mut s)?;
                Ok(s)
            })
            .collect()
    }

    /// Reads every output from its surface (binding order) and returns the
    /// values by graph name.
    pub fn unpack_outputs(&self, surfaces: &[Vec<u8>]) -> Result<Vec<(String, Vec<f32>)>> {
        if surfaces.len() != self.outputs.len() {
            return Err(Error::value("unpack", format!("{} surfaces for {} outputs", surfaces.len(), self.outputs.len())));
        }
        self.outputs.iter().zip(surfaces).map(|(p, s)| Ok((p.name.clone(), IoPlan::unpack(p, s)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, shape: &[usize], d: DType) -> (String, String, Fact) {
        (name.to_string(), name.to_string(), Fact::new(shape.to_vec(), d))
    }

    #[test]
    fn surfaces_are_large_equal_and_bound_alphabetically() {
        let plan = IoPlan::new(
            &[port("zeta", &[1, 3, 5], DType::F16), port("alpha", &[1, 256, 1, 200], DType::F16), port("mid", &[7], DType::U8)],
            &[port("y", &[2, 33], DType::F16)],
        )
        .unwrap();
        let names: Vec<&str> = plan.inputs.iter().map(|p| p.mil_name.as_str()).collect();
        assert_eq!(names, ["alpha", "mid", "zeta"]);
        assert!(plan.inputs.iter().enumerate().all(|(k, p)| p.binding == k));
        // alpha: 256 rows of 200 fp16 = 400 B, padded to 448 B → 114,688 B.
        let a = plan.input("alpha").unwrap();
        assert_eq!((a.row_stride, a.rows, a.bytes), (448, 256, 114_688));
        assert_eq!(plan.input_surface_bytes, 114_688);
        assert_eq!(plan.output_surface_bytes, MIN_SURFACE_BYTES);
        assert_eq!(plan.input("zeta").unwrap().row_stride, 64);
        assert_eq!(plan.output("y").unwrap().row_stride, 128);
        assert!(plan.inputs.iter().all(|p| p.row_stride % ROW_ALIGN == 0));
    }

    #[test]
    fn pack_then_unpack_round_trips_with_zeroed_padding() {
        let plan = IoPlan::new(&[port("x", &[3, 5, 31], DType::F16), port("q", &[4, 65], DType::U8)], &[port("b", &[2, 3], DType::Bool)]).unwrap();
        let x: Vec<f32> = (0..3 * 5 * 31).map(|i| f16::from_f32((i as f32 - 200.0) * 0.37).to_f32()).collect();
        let q: Vec<f32> = (0..4 * 65).map(|i| (i % 256) as f32).collect();
        let surfaces = plan.pack_inputs(&[("x", &x), ("q", &q)]).unwrap();
        assert!(surfaces.iter().all(|s| s.len() == plan.input_surface_bytes));
        let (px, pq) = (plan.input("x").unwrap(), plan.input("q").unwrap());
        assert_eq!(IoPlan::unpack(px, &surfaces[px.binding]).unwrap(), x);
        assert_eq!(IoPlan::unpack(pq, &surfaces[pq.binding]).unwrap(), q);
        // Row padding and the tail of the surface are zero.
        let s = &surfaces[px.binding];
        for r in 0..px.rows {
            assert!(s[r * px.row_stride + 62..(r + 1) * px.row_stride].iter().all(|&b| b == 0));
        }
        assert!(s[px.bytes..].iter().all(|&b| b == 0));
        // Outputs: a bool port comes back as 0/1 from any non-zero fp16.
        let pb = plan.output("b").unwrap();
        let mut out = vec![0u8; plan.output_surface_bytes];
        IoPlan::pack(pb, &[1.0, 0.0, 2.0, 0.0, -1.0, 1.0], &mut out).unwrap();
        let got = plan.unpack_outputs(&[out]).unwrap();
        assert_eq!(got, vec![("b".to_string(), vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0])]);
    }

    #[test]
    fn wrong_sizes_are_errors_not_panics() {
        let plan = IoPlan::new(&[port("x", &[2, 2], DType::F16)], &[port("y", &[2], DType::F16)]).unwrap();
        let p = plan.input("x").unwrap();
        assert!(IoPlan::pack(p, &[1.0; 3], &mut vec![0; 64]).is_err());
        assert!(IoPlan::pack(p, &[1.0; 4], &mut vec![0; 10]).is_err());
        assert!(IoPlan::unpack(p, &[0; 10]).is_err());
        assert!(plan.pack_inputs(&[("nope", &[1.0; 4])]).is_err());
        assert!(plan.unpack_outputs(&[]).is_err());
    }
}

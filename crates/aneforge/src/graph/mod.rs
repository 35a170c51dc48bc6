//! The graph IR.
//!
//! Users build a lazy DAG of [`Tensor`]s: each holds its op, its inputs and
//! its inferred [`Fact`], so a shape error surfaces on the line that wrote
//! it. `compile` flattens the DAG reachable from the outputs into a
//! [`Graph`] (topologically ordered, immutable) that passes rewrite and
//! backends consume.

mod flat;
mod tensor;

pub use flat::{Graph, Node, ValueId};
pub use tensor::{fresh_id, Tensor, TensorNode};

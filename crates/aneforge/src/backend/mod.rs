//! Backends run or write a lowered program; they never change the graph.

pub mod ane;
pub mod mil;
pub mod sim;

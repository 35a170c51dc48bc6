pub mod npz;

pub mod digest;
pub mod message;
pub mod stack;

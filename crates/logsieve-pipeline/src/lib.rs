//! The cascade and everything around it: configuration, per-source routes,
//! streaming readers and writers, training and evaluation.
//!
//! `Pipeline::classify` is the one entry point the CLI and the server share;
//! a [`PipelineBuilder`] is the one way to make a [`Pipeline`]. This crate
//! reads no file and no environment variable itself: the CLI loads what the
//! configuration names and hands it to the builder.

pub mod cascade;
pub mod config;
pub mod decision;
pub mod eval;
pub mod examples;
pub mod io;
pub mod labelled;
pub mod labels;
pub mod loso;
pub mod run;
pub mod train;
pub mod train_hybrid;
pub mod units;

pub use cascade::{
    Applied, CacheCounts, Correction, EncoderUnavailable, FeedbackError, Item, MethodCounts, ModelParts,
    Pipeline, PipelineBuilder, PipelineError, StatsSnapshot, Store, StoreStatus, DEFAULT_CLASSIFIER_JSON,
    FEEDBACK_NOTE,
};
pub use config::{Config, Route};
pub use decision::{Decision, Method, UNCLASSIFIED};

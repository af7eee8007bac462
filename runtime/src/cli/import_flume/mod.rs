//! `sluice import-flume agent.properties --agent a1`: translates one agent of an Apache Flume
//! NG configuration (a Java `.properties` file) into a Sluice pipeline file.
//!
//! Sluice follows Flume's model — sources, transactional channels, sinks, interceptors,
//! replicating and multiplexing channel selectors, failover and load-balancing sink groups —
//! so most of a Flume agent has a direct equivalent, and moving agents over should not mean
//! rewriting each by hand. The translation is deliberately conservative:
//!
//! - whatever has no faithful equivalent (a custom Java class, an HDFS sink, a property
//!   Sluice has no use for) is left out and reported as a [`Skipped`] item with its line and
//!   the reason — nothing is dropped silently;
//! - a component that depends on something left out (a sink whose channel was skipped, a
//!   group whose sinks were) is left out too, so the YAML stays consistent and
//!   `sluice validate` can check the rest;
//! - where Sluice behaves differently from Flume for the same setting (header names, file
//!   naming, where state is kept), the YAML says so in a comment next to the field.
//!
//! The work is split in layers: [`properties`] reads the file as `java.util.Properties` does,
//! keeping line numbers; [`agent`] gathers one agent's components; [`channels`], [`sources`],
//! [`interceptors`], [`sinks`] and [`kafka`] map each Flume type onto Sluice's, with
//! [`values`] converting single values (`${…}` references, templates, durations, regexes);
//! [`translate`] orders the whole and drops what depends on dropped parts; [`yaml`] writes it.

mod agent;
mod channels;
mod interceptors;
mod kafka;
mod properties;
mod sinks;
mod sources;
mod translate;
mod values;
mod yaml;

use std::fmt;

/// The pipeline for one agent, and what could not be carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The Sluice pipeline file: a header comment (`# Translated from <agent> by sluice
    /// import-flume`, then the items left out), the channels, sources, sinks and sink groups.
    pub yaml: String,
    /// Everything left out, by line.
    pub skipped: Vec<Skipped>,
    /// How many components (channels, sources, sinks, sink groups) `yaml` defines: 0 when
    /// the agent has none in the file or none could be translated.
    pub components: usize,
}

/// A property (or a whole component, at its `type` line) that is not in the translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line of the property in the `.properties` file.
    pub line: usize,
    /// The property's key as written (`a1.sinks.k1.type` for a whole component).
    pub key: String,
    /// Why it was left out.
    pub why: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.why)
    }
}

/// Translates agent `agent` of the Flume configuration `properties` (the text of a
/// `.properties` file). Keys of other agents are ignored.
pub fn translate(properties: &str, agent: &str) -> Translation {
    translate::run(properties, agent)
}

/// The agents a Flume configuration defines (those with a `sources`, `channels`, `sinks` or
/// `sinkgroups` list), in order of appearance: for a message when `--agent` names none of
/// them.
pub fn agents(properties: &str) -> Vec<String> {
    agent::agents(&properties::parse(properties))
}

#[cfg(test)]
mod tests;

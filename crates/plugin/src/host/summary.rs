//! A plugin library's descriptor as plain data ([`DescriptorSummary`]): what the host reads from
//! the descriptor at load, without the entry points. It can be copied, compared and sent between
//! processes, so a gateway that leaves the loading to a child process (`isolation = "process"`)
//! knows the descriptor without loading the library itself.

use serde::{Deserialize, Serialize};

use super::Library;

/// What a loaded library's descriptor says (its major is the host's: checked at load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorSummary {
    pub name: String,
    pub version: String,
    /// What built it: SDK, compiler, target (free text from the plugin).
    pub build_tag: String,
    /// The ABI minor the plugin was built for.
    pub abi_minor: u32,
    /// The size of the plugin's descriptor.
    pub struct_size: u32,
    /// Whether the plugin exports the batch entry (ABI 1.1).
    pub batch_entry: bool,
}

impl Library {
    /// The descriptor as plain data.
    pub fn summary(&self) -> DescriptorSummary {
        DescriptorSummary {
            name: self.name.clone(),
            version: self.version.clone(),
            build_tag: self.build_tag.clone(),
            abi_minor: self.abi_minor,
            struct_size: self.struct_size,
            batch_entry: self.has_batch_entry(),
        }
    }
}

//! Keeps only the named exports of a Wasm module. The proxy-wasm host enters the VM
//! for every callback a module exports and skips one it does not export
//! (proxy-wasm-cpp-host `src/context.cc`); the Rust SDK exports all of them. Removing
//! the callbacks a filter does not implement takes those VM entries off every request.
//! Every other section is copied byte for byte, and the result is validated.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{ExternalKind, Parser, Payload, Validator};

/// The names `text` lists: one per line, `#` starts a comment, blank lines ignored.
pub fn keep_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// The module's export names, in section order.
pub fn exports(module: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(reader) = payload? {
            for export in reader {
                names.push(export?.name.to_string());
            }
        }
    }
    Ok(names)
}

/// `module` with only the exports named in `keep`. Refuses a name in `keep` that the
/// module does not export (a typo would otherwise keep nothing, silently).
pub fn trim(module: &[u8], keep: &[String]) -> Result<Vec<u8>> {
    let wanted: BTreeSet<&str> = keep.iter().map(String::as_str).collect();
    let mut kept = BTreeSet::new();
    let mut out = Module::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.context("the input is not a Wasm module")? {
            Payload::ExportSection(reader) => {
                let mut section = ExportSection::new();
                for export in reader {
                    let export = export?;
                    if wanted.contains(export.name) {
                        section.export(export.name, kind(export.kind)?, export.index);
                        kept.insert(export.name);
                    }
                }
                out.section(&section);
            }
            // Copied whole with the code section they belong to.
            Payload::CodeSectionEntry(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    let (start, end) = (usize::try_from(range.start)?, usize::try_from(range.end)?);
                    let data = module
                        .get(start..end)
                        .context("a section lies outside the module")?;
                    out.section(&RawSection { id, data });
                }
            }
        }
    }
    let missing: Vec<&str> = wanted.difference(&kept).copied().collect();
    if !missing.is_empty() {
        bail!("the module does not export {}", missing.join(", "));
    }
    let bytes = out.finish();
    Validator::new()
        .validate_all(&bytes)
        .context("the trimmed module does not validate")?;
    Ok(bytes)
}

/// Writes `bytes` to `path` by a rename from a file of this process's own, so an Envoy
/// starting meanwhile (another test, say) reads the old module or the new, never half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("wasm.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Reads `input`, keeps the exports `keep_file` lists, writes `output` if it would
/// change (so a module loaded from it stays the same file).
pub fn trim_file(keep_file: &Path, input: &Path, output: &Path) -> Result<()> {
    let keep = keep_list(
        &std::fs::read_to_string(keep_file).with_context(|| format!("reading {}", keep_file.display()))?,
    );
    let module = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let trimmed = trim(&module, &keep).with_context(|| format!("trimming {}", input.display()))?;
    if std::fs::read(output).is_ok_and(|old| old == trimmed) {
        return Ok(());
    }
    write_atomically(output, &trimmed)
}

fn kind(kind: ExternalKind) -> Result<ExportKind> {
    Ok(match kind {
        ExternalKind::Func => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
        other => bail!("an export of kind {other:?} is not supported"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wasm_encoder::{CodeSection, Function, FunctionSection, Instruction, TypeSection};

    /// A module exporting functions `names` (each `() -> ()`, doing nothing).
    fn module(names: &[&str]) -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        for _ in names {
            funcs.function(0);
        }
        m.section(&funcs);
        let mut exports = ExportSection::new();
        for (i, name) in names.iter().enumerate() {
            exports.export(name, ExportKind::Func, u32::try_from(i).unwrap());
        }
        m.section(&exports);
        let mut code = CodeSection::new();
        for _ in names {
            let mut f = Function::new([]);
            f.instruction(&Instruction::End);
            code.function(&f);
        }
        m.section(&code);
        m.finish()
    }

    #[test]
    fn keeps_exactly_the_named_exports_and_the_code() {
        let input = module(&["proxy_on_a", "proxy_on_b", "proxy_on_c"]);
        let out = trim(&input, &["proxy_on_c".into(), "proxy_on_a".into()]).unwrap();
        assert_eq!(exports(&out).unwrap(), ["proxy_on_a", "proxy_on_c"]);
        // The functions stay (only their exports go): the code section is the same.
        let code = |m: &[u8]| {
            Parser::new(0)
                .parse_all(m)
                .find_map(|p| match p.unwrap() {
                    Payload::CodeSectionStart {
                        unchecked_range: range,
                        ..
                    } => Some(
                        m[usize::try_from(range.start).unwrap()..usize::try_from(range.end).unwrap()]
                            .to_vec(),
                    ),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(code(&out), code(&input));
        // Trimming again changes nothing.
        assert_eq!(
            trim(&out, &["proxy_on_a".into(), "proxy_on_c".into()]).unwrap(),
            out
        );
    }

    #[test]
    fn a_name_the_module_does_not_export_is_an_error() {
        let input = module(&["proxy_on_a"]);
        let err = trim(&input, &["proxy_on_a".into(), "proxy_on_typo".into()]).unwrap_err();
        assert_eq!(err.to_string(), "the module does not export proxy_on_typo");
        assert!(trim(b"not wasm", &[]).is_err());
    }

    #[test]
    fn the_keep_list_reads_names_and_skips_comments() {
        let text = "# why\nmemory\n\n  proxy_on_tick  # the sync\n";
        assert_eq!(keep_list(text), ["memory", "proxy_on_tick"]);
    }
}

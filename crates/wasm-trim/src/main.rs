//! `wasm-trim KEEP_FILE IN.wasm OUT.wasm`: writes OUT with only the exports KEEP_FILE
//! lists (see the library), and says what it removed. OUT is a file of its own, never
//! cargo's artefact: cargo links its copy again on every build.

use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [keep_file, input, output] = args.as_slice() else {
        bail!("usage: wasm-trim KEEP_FILE IN.wasm OUT.wasm");
    };
    let keep_text = std::fs::read_to_string(keep_file).with_context(|| format!("reading {keep_file}"))?;
    let keep = wasm_trim::keep_list(&keep_text);
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let removed: Vec<String> = wasm_trim::exports(&module)?
        .into_iter()
        .filter(|name| !keep.contains(name))
        .collect();
    let trimmed = wasm_trim::trim(&module, &keep).with_context(|| format!("trimming {input}"))?;
    wasm_trim::write_atomically(output.as_ref(), &trimmed)?;
    println!(
        "wasm-trim: {output}: {} bytes, {} exports kept, {} removed",
        trimmed.len(),
        keep.len(),
        removed.len(),
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-trim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `convertor`: drop-in for the overlaybd userspace image convertor (work in progress).

use clap::Parser;

/// Convert OCI/Docker images into overlaybd (or TurboOCIv1) images.
///
/// The conversion pipeline is not implemented yet; this binary exits with code 2.
#[derive(Parser, Debug)]
#[command(name = "convertor", version, about, long_about = None)]
struct Args {
    /// Repository, e.g. `registry.example.com/ns/image`, or `oci:DIR` for an OCI layout.
    #[arg(short = 'r', long = "repository")]
    repository: Option<String>,
    /// Input tag.
    #[arg(short = 'i', long = "input-tag")]
    input_tag: Option<String>,
    /// Output tag of the overlaybd image.
    #[arg(short = 'o', long = "overlaybd")]
    overlaybd: Option<String>,
}

fn main() {
    let _args = Args::parse();
    eprintln!("convertor: image conversion is not implemented yet");
    std::process::exit(obd_cli::exit::USAGE);
}

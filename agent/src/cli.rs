//! The command-line grammar (clap types only; no behaviour).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aq",
    version,
    about = "Aquilia Edge: package, verify and move ML models to edge devices"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Registry data directory [default: $XDG_DATA_HOME/aquilia, ~/.local/share/aquilia, or /var/lib/aquilia]
    #[arg(long, global = true, env = "AQ_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (errors as JSON on stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Device profile: a name from targets/ (embedded) or a profile file [default: detected]
    #[arg(long, global = true, env = "AQ_PROFILE", value_name = "NAME|FILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage signing keys and the trust policy
    #[command(subcommand)]
    Key(KeyCommand),
    /// Save, inspect, verify and move modelpacks in the local registry
    #[command(subcommand)]
    Pack(PackCommand),
    /// This device: its profile (target, threads, preferred runtime and variants)
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Serve models over HTTP (v1 and Open Inference Protocol v2) with dynamic batching
    Serve(ServeArgs),
    /// Serve one model file and reload it whenever the file changes
    Dev(DevArgs),
    /// Run this device under a sync-server: enroll once, then `run`
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Staged rollouts of a pack to devices on a sync-server
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Push a pack and start its rollout in one step
    Deploy(DeployArgs),
    /// Convert a pack's model (or an ONNX file) for another runtime; a pack gains the result as
    /// a signed variant
    Export(ModelExportArgs),
    /// Optimization passes that add a variant to a pack
    #[command(subcommand)]
    Optimize(OptimizeCommand),
    /// Say whether this build and device profile run a model (a file or a pack), with which
    /// engine and path, or every operator and feature that stops it (exit 5)
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A model: NAME[:VERSION|:TAG] from the registry, or a .onnx/.tflite file
    pub model: String,
    /// For a pack: the variant to check, in order of preference (repeatable) [default: the
    /// device profile's variants, as aq serve picks]
    #[arg(long = "variant", value_name = "NAME")]
    pub variants: Vec<String>,
    /// For a pack: check every model it holds (the main model and each variant)
    #[arg(long, conflicts_with = "variants")]
    pub all_variants: bool,
    /// Fix an input's shape as aq serve's input_shapes would (repeatable; -1 leaves an axis free)
    #[arg(long = "input-shape", value_name = "NAME=D1,D2,...")]
    pub input_shapes: Vec<String>,
    /// Fix an input's value as aq serve's input_values would (repeatable), e.g. sr=16000
    #[arg(long = "input-value", value_name = "NAME=V1,V2,...")]
    pub input_values: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum OptimizeCommand {
    /// Quantize a pack's ONNX model to int8 with ops tract runs; adds the variant onnx-int8
    Quantize(QuantizeArgs),
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// NAME:VERSION (or NAME, NAME:TAG) in the local registry
    pub reference: String,
    /// How activations are quantized (weights are int8 per output channel either way)
    #[arg(long, value_enum)]
    pub mode: QuantizeMode,
    /// For --mode static: a directory of float32 .npy inputs that set the activation ranges
    /// (each in the model's input shape, or a stack [N, ...] of them), preprocessed as in
    /// serving and like what the model will see: about 100 is plenty
    #[arg(long, value_name = "DIR", required_if_eq("mode", "static"))]
    pub calibration: Option<PathBuf>,
    /// For --mode static: fix an input's shape for calibration (repeatable); an unknown
    /// leading (batch) axis defaults to 1. The quantized model keeps the model's own shapes.
    #[arg(long = "input-shape", value_name = "NAME=D1,D2,...")]
    pub input_shapes: Vec<String>,
    /// Secret key to sign the pack's extended manifest (required when the pack is signed)
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantizeMode {
    /// Activations quantized at run time (DynamicQuantizeLinear, ConvInteger, MatMulInteger);
    /// no calibration data
    Dynamic,
    /// Activation ranges calibrated on --calibration inputs (QuantizeLinear, QLinearConv,
    /// QLinearMatMul, DequantizeLinear); int8 stays between consecutive convolutions;
    /// depthwise convolutions stay float (tract runs them faster so)
    Static,
}

/// What `aq export` converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportTarget {
    /// A TFLite flatbuffer that Google's LiteRT runs (variant `tflite-fp32`)
    Tflite,
    /// A Triton Inference Server model repository entry (ONNX Runtime backend) under
    /// --output DIR: NAME/config.pbtxt and NAME/VERSION/model.onnx
    Triton,
    /// A TorchServe model archive (.mar) at --output FILE: the ONNX model and an onnxruntime
    /// handler that takes aq serve's v1 JSON
    Torchserve,
    /// A BentoML model store entry under --output DIR (a BENTOML_HOME):
    /// models/NAME/VERSION/ that bentoml.onnx.load_model("NAME:VERSION") loads
    Bentoml,
}

#[derive(Debug, Args)]
pub struct ModelExportArgs {
    /// NAME:VERSION (or NAME, NAME:TAG) in the local registry, or an ONNX model file
    pub source: String,
    /// The runtime to convert for
    #[arg(long, value_enum)]
    pub target: ExportTarget,
    /// Also write the converted model to this file (required when SOURCE is a file); for
    /// --target triton, the model repository directory
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// For --target triton: the largest batch Triton may form (0: no batching) [default: 8]
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_batch: u32,
    /// Fixed shape for an input with free dimensions, NAME=D1,D2,... (repeatable); a free
    /// leading (batch) axis defaults to 1
    #[arg(long = "input-shape", value_name = "NAME=D1,D2,...")]
    pub input_shapes: Vec<String>,
    /// Secret key to sign the pack's extended manifest (required when the pack is signed)
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Quantize: int8 is full-integer (int8 weights per channel and activations; float inputs
    /// and outputs), variant `tflite-int8`
    #[arg(long, value_enum, requires = "calibration")]
    pub quantize: Option<Quantize>,
    /// Calibration inputs for --quantize: a directory of float32 .npy files, each one input (or
    /// a stack [N, ...] of them), preprocessed as in serving and like what the model will see:
    /// about 100 is plenty
    #[arg(long, value_name = "DIR")]
    pub calibration: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quantize {
    Int8,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register this device with a sync-server: makes the device key, gets the device token
    Enroll(EnrollArgs),
    /// Follow the desired state from the server and serve the active pack
    Run(AgentRunArgs),
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The sync-server, e.g. https://sync.example:8443
    #[arg(long, env = "AQ_SERVER", value_name = "URL")]
    pub server: String,
    /// Enrollment token (role device or admin)
    #[arg(long, env = "AQ_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Read the enrollment token from this file
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) to trust for the server (PEM); copied into the data directory
    #[arg(long, env = "AQ_SERVER_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A label rollouts select devices by, KEY=VALUE; repeatable
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A name for people [default: the device id]
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentRunArgs {
    /// How often to report state and health
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub heartbeat: String,
    #[command(flatten)]
    pub serving: ServingArgs,
}

#[derive(Debug, Args, Clone)]
pub struct RolloutSpec {
    /// Devices whose labels match, KEY=VALUE; repeatable, or comma-separated
    #[arg(long = "selector", value_name = "KEY=VALUE")]
    pub selector: Vec<String>,
    /// Cumulative percentages of the selected devices per step
    #[arg(long, default_value = "10,50,100", value_name = "PCT,PCT,...")]
    pub steps: String,
    /// Abort and roll back when more than this share of the devices fail, e.g. 5%
    #[arg(long, default_value = "5%", value_name = "PCT")]
    pub max_failure: String,
    /// Advance on its own once a step's devices all run the pack and this long has passed
    #[arg(long, value_name = "DURATION")]
    pub soak: Option<String>,
    /// Start even if some selected devices cannot run the pack (by the capabilities they
    /// reported); without it such a rollout is refused, naming them
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of NAME:VERSION (already on the server)
    Create {
        /// NAME:VERSION or NAME:TAG on the server
        pack: String,
        #[command(flatten)]
        spec: RolloutSpec,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show one rollout, or list them all
    Status {
        id: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Go to the next step now
    Advance {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop automatic advancing
    Pause {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Resume a paused rollout
    Resume {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Send every device of the rollout back to what it ran before
    Rollback {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// NAME, NAME:VERSION or NAME:TAG in the local registry
    pub reference: String,
    #[command(flatten)]
    pub spec: RolloutSpec,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ServingArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or the config file's]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Config file with server and per-model settings (TOML)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Most rows per engine run (1 turns batching off) [default: 8]
    #[arg(long, value_name = "N")]
    pub max_batch: Option<usize>,
    /// Longest wait for a batch to fill, e.g. 2ms [default: 2ms]
    #[arg(long, value_name = "DURATION")]
    pub max_delay: Option<String>,
    /// Requests allowed to wait per model before new ones get 503 [default: 256]
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// Refuse (503, Retry-After) a request expected to wait longer than this in the queue:
    /// auto (two batches per worker; one row per worker while an overload stands), off, or a
    /// duration such as 50ms [default: auto]
    #[arg(long, value_name = "DURATION")]
    pub max_queue_delay: Option<String>,
    /// Per-request timeout, e.g. 5s [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Inference threads per model [default: the device's cores, at most 4]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Keep every batch plan instead of only those warm-up measures to beat batch 1 per row
    #[arg(long)]
    pub no_calibrate: bool,
    /// Run the HTTP threads this many nice steps below the inference workers (10: under
    /// overload the CPU finishes admitted runs first; on a machine shared with other busy
    /// processes they then starve the HTTP threads too)
    #[arg(long, value_name = "STEPS", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub http_nice: i32,
    /// Largest request body in bytes [default: 64 MiB]
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<usize>,
    /// Log format on stderr
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level: error, warn, info, debug or trace
    #[arg(long, env = "AQ_LOG", default_value = "info")]
    pub log_level: String,
    /// A pack variant to serve when the pack has it (e.g. tflite-fp32), in order of preference;
    /// repeatable [default: the device profile's variants]
    #[arg(long = "variant", value_name = "NAME")]
    pub variants: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model: NAME[:VERSION|:TAG] from the registry, or a .onnx/.tflite file; ALIAS=MODEL
    /// serves it under another name. Repeatable.
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<String>,
    #[command(flatten)]
    pub serving: ServingArgs,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// The model file to serve and watch (ALIAS=FILE names it)
    #[arg(long = "model", value_name = "FILE")]
    pub model: String,
    /// How often to look at the file, e.g. 250ms
    #[arg(long, default_value = "250ms", value_name = "DURATION")]
    pub poll: String,
    #[command(flatten)]
    pub serving: ServingArgs,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Show the device profile in use and why it was chosen
    Profile(DeviceProfileArgs),
}

#[derive(Debug, Args)]
pub struct DeviceProfileArgs {
    /// List every embedded profile instead
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make an ed25519 key pair: KEY (secret, mode 0600) and KEY.pub
    Gen(KeyGenArgs),
    /// Print the public key and key id of a secret or public key file
    Show(KeyShowArgs),
    /// Add a public key to a trust policy, allowed to sign the given pack names
    Trust(KeyTrustArgs),
}

#[derive(Debug, Args)]
pub struct KeyGenArgs {
    /// Where to write the secret key (the public key goes to FILE.pub)
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct KeyShowArgs {
    /// A secret key file, a .pub file, or a public key ("ed25519:...")
    pub key: String,
}

#[derive(Debug, Args)]
pub struct KeyTrustArgs {
    /// A secret key file, a .pub file, or a public key ("ed25519:...")
    pub key: String,
    /// Pack name patterns this key may sign ("*" matches any run of characters)
    #[arg(long = "packs", required = true, num_args = 1..)]
    pub packs: Vec<String>,
    /// A label for the key in the policy
    #[arg(long)]
    pub label: Option<String>,
    /// The key stops being trusted after this RFC 3339 time
    #[arg(long)]
    pub not_after: Option<String>,
    /// Policy file to change [default: DATA_DIR/trust.toml]
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct TrustArgs {
    /// Trust policy file [default: DATA_DIR/trust.toml if it exists, else trust no key]
    #[arg(long, value_name = "POLICY")]
    pub trust: Option<PathBuf>,
    /// Accept packs that carry no signature
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Inspect a model, chunk, compress, sign and record it in the registry
    Save(SaveArgs),
    /// List the packs in the registry
    List,
    /// Show a pack's manifest: signature, files, inputs and outputs
    Inspect(RefArgs),
    /// Check a pack's signature against a trust policy, and every chunk and file digest
    Verify(VerifyArgs),
    /// Point NAME:TAG at the version REF resolves to
    Tag(TagArgs),
    /// Remove a tag
    Untag(UntagArgs),
    /// Remove a pack (its chunks stay until `gc`)
    Rm(RefArgs),
    /// Remove chunks that no pack references
    Gc,
    /// Write a pack as one .aqpack file (for air-gapped transfer)
    Export(ExportArgs),
    /// Verify and add an .aqpack file to the registry
    Import(ImportArgs),
    /// Write a pack's original files, byte for byte, into a new directory
    Unpack(UnpackArgs),
    /// Upload a pack to a sync-server: only the chunks it lacks, then the signed manifest
    Push(PushArgs),
    /// Download a pack from a sync-server, verifying signature, chunks and files
    Pull(PullArgs),
}

#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// The sync-server, e.g. https://sync.example:8443
    #[arg(long, env = "AQ_SERVER", value_name = "URL")]
    pub server: String,
    /// API token (prefer AQ_TOKEN or --token-file: arguments show in `ps`)
    #[arg(long, env = "AQ_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Read the API token from this file
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) to trust for the server (PEM) instead of the system's
    #[arg(long, env = "AQ_SERVER_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Parallel connections for chunk transfers
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// NAME, NAME:VERSION or NAME:TAG in the local registry
    pub reference: String,
    /// Also point these tags at the pushed version on the server; repeatable
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAME, NAME:VERSION, NAME:TAG, or a pack digest, on the server
    pub reference: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The model file (.onnx or .tflite)
    pub model: PathBuf,
    /// Pack name (a-z, 0-9, '.', '_', '-')
    #[arg(long)]
    pub name: String,
    /// Semantic version, e.g. 1.2.0
    #[arg(long)]
    pub version: String,
    /// Secret key to sign the manifest with (unsigned without it)
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Metadata to record, KEY=VALUE (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Extra files to carry in the pack (labels, external weights); repeatable
    #[arg(long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// zstd compression level (1-19)
    #[arg(long, default_value_t = aq_pack::chunk::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
}

#[derive(Debug, Args)]
pub struct RefArgs {
    /// NAME, NAME:VERSION or NAME:TAG
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// NAME, NAME:VERSION or NAME:TAG
    pub reference: String,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// NAME:VERSION (or NAME:TAG) to point the tag at
    pub reference: String,
    /// The tag, e.g. prod (never a version)
    pub tag: String,
}

#[derive(Debug, Args)]
pub struct UntagArgs {
    /// NAME:TAG
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// NAME, NAME:VERSION or NAME:TAG
    pub reference: String,
    /// Output file (.aqpack)
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The .aqpack file
    pub file: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// NAME, NAME:VERSION or NAME:TAG
    pub reference: String,
    /// Directory to create (must not exist, or be empty)
    #[arg(long, short)]
    pub output: PathBuf,
}

//! TFLite's builtin operator codes and their names, as the schema numbers them.

/// Names of the builtin operators, indexed by code (schema version 3).
pub const NAMES: [&str; 162] = [
    "ADD",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "DEQUANTIZE",
    "EMBEDDING_LOOKUP",
    "FLOOR",
    "FULLY_CONNECTED",
    "HASHTABLE_LOOKUP",
    "L2_NORMALIZATION",
    "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION",
    "LOGISTIC",
    "LSH_PROJECTION",
    "LSTM",
    "MAX_POOL_2D",
    "MUL",
    "RELU",
    "RELU_N1_TO_1",
    "RELU6",
    "RESHAPE",
    "RESIZE_BILINEAR",
    "RNN",
    "SOFTMAX",
    "SPACE_TO_DEPTH",
    "SVDF",
    "TANH",
    "CONCAT_EMBEDDINGS",
    "SKIP_GRAM",
    "CALL",
    "CUSTOM",
    "EMBEDDING_LOOKUP_SPARSE",
    "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "GATHER",
    "BATCH_TO_SPACE_ND",
    "SPACE_TO_BATCH_ND",
    "TRANSPOSE",
    "MEAN",
    "SUB",
    "DIV",
    "SQUEEZE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "STRIDED_SLICE",
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "EXP",
    "TOPK_V2",
    "SPLIT",
    "LOG_SOFTMAX",
    "DELEGATE",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "CAST",
    "PRELU",
    "MAXIMUM",
    "ARG_MAX",
    "MINIMUM",
    "LESS",
    "NEG",
    "PADV2",
    "GREATER",
    "GREATER_EQUAL",
    "LESS_EQUAL",
    "SELECT",
    "SLICE",
    "SIN",
    "TRANSPOSE_CONV",
    "SPARSE_TO_DENSE",
    "TILE",
    "EXPAND_DIMS",
    "EQUAL",
    "NOT_EQUAL",
    "LOG",
    "SUM",
    "SQRT",
    "RSQRT",
    "SHAPE",
    "POW",
    "ARG_MIN",
    "FAKE_QUANT",
    "REDUCE_PROD",
    "REDUCE_MAX",
    "PACK",
    "LOGICAL_OR",
    "ONE_HOT",
    "LOGICAL_AND",
    "LOGICAL_NOT",
    "UNPACK",
    "REDUCE_MIN",
    "FLOOR_DIV",
    "REDUCE_ANY",
    "SQUARE",
    "ZEROS_LIKE",
    "FILL",
    "FLOOR_MOD",
    "RANGE",
    "RESIZE_NEAREST_NEIGHBOR",
    "LEAKY_RELU",
    "SQUARED_DIFFERENCE",
    "MIRROR_PAD",
    "ABS",
    "SPLIT_V",
    "UNIQUE",
    "CEIL",
    "REVERSE_V2",
    "ADD_N",
    "GATHER_ND",
    "COS",
    "WHERE",
    "RANK",
    "ELU",
    "REVERSE_SEQUENCE",
    "MATRIX_DIAG",
    "QUANTIZE",
    "MATRIX_SET_DIAG",
    "ROUND",
    "HARD_SWISH",
    "IF",
    "WHILE",
    "NON_MAX_SUPPRESSION_V4",
    "NON_MAX_SUPPRESSION_V5",
    "SCATTER_ND",
    "SELECT_V2",
    "DENSIFY",
    "SEGMENT_SUM",
    "BATCH_MATMUL",
    "PLACEHOLDER_FOR_GREATER_OP_CODES",
    "CUMSUM",
    "CALL_ONCE",
    "BROADCAST_TO",
    "RFFT2D",
    "CONV_3D",
    "IMAG",
    "REAL",
    "COMPLEX_ABS",
    "HASHTABLE",
    "HASHTABLE_FIND",
    "HASHTABLE_IMPORT",
    "HASHTABLE_SIZE",
    "REDUCE_ALL",
    "CONV_3D_TRANSPOSE",
    "VAR_HANDLE",
    "READ_VARIABLE",
    "ASSIGN_VARIABLE",
    "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL",
    "BUCKETIZE",
    "RANDOM_UNIFORM",
    "MULTINOMIAL",
    "GELU",
    "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1",
    "UNSORTED_SEGMENT_PROD",
    "UNSORTED_SEGMENT_MAX",
    "UNSORTED_SEGMENT_SUM",
    "ATAN2",
    "UNSORTED_SEGMENT_MIN",
    "SIGN",
    "BITCAST",
    "BITWISE_XOR",
    "RIGHT_SHIFT",
];

pub const ADD: i32 = 0;
pub const AVERAGE_POOL_2D: i32 = 1;
pub const CONCATENATION: i32 = 2;
pub const CONV_2D: i32 = 3;
pub const DEPTHWISE_CONV_2D: i32 = 4;
pub const DEPTH_TO_SPACE: i32 = 5;
pub const DEQUANTIZE: i32 = 6;
pub const EMBEDDING_LOOKUP: i32 = 7;
pub const FLOOR: i32 = 8;
pub const FULLY_CONNECTED: i32 = 9;
pub const HASHTABLE_LOOKUP: i32 = 10;
pub const L2_NORMALIZATION: i32 = 11;
pub const L2_POOL_2D: i32 = 12;
pub const LOCAL_RESPONSE_NORMALIZATION: i32 = 13;
pub const LOGISTIC: i32 = 14;
pub const LSH_PROJECTION: i32 = 15;
pub const LSTM: i32 = 16;
pub const MAX_POOL_2D: i32 = 17;
pub const MUL: i32 = 18;
pub const RELU: i32 = 19;
pub const RELU_N1_TO_1: i32 = 20;
pub const RELU6: i32 = 21;
pub const RESHAPE: i32 = 22;
pub const RESIZE_BILINEAR: i32 = 23;
pub const RNN: i32 = 24;
pub const SOFTMAX: i32 = 25;
pub const SPACE_TO_DEPTH: i32 = 26;
pub const SVDF: i32 = 27;
pub const TANH: i32 = 28;
pub const CONCAT_EMBEDDINGS: i32 = 29;
pub const SKIP_GRAM: i32 = 30;
pub const CALL: i32 = 31;
pub const CUSTOM: i32 = 32;
pub const EMBEDDING_LOOKUP_SPARSE: i32 = 33;
pub const PAD: i32 = 34;
pub const UNIDIRECTIONAL_SEQUENCE_RNN: i32 = 35;
pub const GATHER: i32 = 36;
pub const BATCH_TO_SPACE_ND: i32 = 37;
pub const SPACE_TO_BATCH_ND: i32 = 38;
pub const TRANSPOSE: i32 = 39;
pub const MEAN: i32 = 40;
pub const SUB: i32 = 41;
pub const DIV: i32 = 42;
pub const SQUEEZE: i32 = 43;
pub const UNIDIRECTIONAL_SEQUENCE_LSTM: i32 = 44;
pub const STRIDED_SLICE: i32 = 45;
pub const BIDIRECTIONAL_SEQUENCE_RNN: i32 = 46;
pub const EXP: i32 = 47;
pub const TOPK_V2: i32 = 48;
pub const SPLIT: i32 = 49;
pub const LOG_SOFTMAX: i32 = 50;
pub const DELEGATE: i32 = 51;
pub const BIDIRECTIONAL_SEQUENCE_LSTM: i32 = 52;
pub const CAST: i32 = 53;
pub const PRELU: i32 = 54;
pub const MAXIMUM: i32 = 55;
pub const ARG_MAX: i32 = 56;
pub const MINIMUM: i32 = 57;
pub const LESS: i32 = 58;
pub const NEG: i32 = 59;
pub const PADV2: i32 = 60;
pub const GREATER: i32 = 61;
pub const GREATER_EQUAL: i32 = 62;
pub const LESS_EQUAL: i32 = 63;
pub const SELECT: i32 = 64;
pub const SLICE: i32 = 65;
pub const SIN: i32 = 66;
pub const TRANSPOSE_CONV: i32 = 67;
pub const SPARSE_TO_DENSE: i32 = 68;
pub const TILE: i32 = 69;
pub const EXPAND_DIMS: i32 = 70;
pub const EQUAL: i32 = 71;
pub const NOT_EQUAL: i32 = 72;
pub const LOG: i32 = 73;
pub const SUM: i32 = 74;
pub const SQRT: i32 = 75;
pub const RSQRT: i32 = 76;
pub const SHAPE: i32 = 77;
pub const POW: i32 = 78;
pub const ARG_MIN: i32 = 79;
pub const FAKE_QUANT: i32 = 80;
pub const REDUCE_PROD: i32 = 81;
pub const REDUCE_MAX: i32 = 82;
pub const PACK: i32 = 83;
pub const LOGICAL_OR: i32 = 84;
pub const ONE_HOT: i32 = 85;
pub const LOGICAL_AND: i32 = 86;
pub const LOGICAL_NOT: i32 = 87;
pub const UNPACK: i32 = 88;
pub const REDUCE_MIN: i32 = 89;
pub const FLOOR_DIV: i32 = 90;
pub const REDUCE_ANY: i32 = 91;
pub const SQUARE: i32 = 92;
pub const ZEROS_LIKE: i32 = 93;
pub const FILL: i32 = 94;
pub const FLOOR_MOD: i32 = 95;
pub const RANGE: i32 = 96;
pub const RESIZE_NEAREST_NEIGHBOR: i32 = 97;
pub const LEAKY_RELU: i32 = 98;
pub const SQUARED_DIFFERENCE: i32 = 99;
pub const MIRROR_PAD: i32 = 100;
pub const ABS: i32 = 101;
pub const SPLIT_V: i32 = 102;
pub const UNIQUE: i32 = 103;
pub const CEIL: i32 = 104;
pub const REVERSE_V2: i32 = 105;
pub const ADD_N: i32 = 106;
pub const GATHER_ND: i32 = 107;
pub const COS: i32 = 108;
pub const WHERE: i32 = 109;
pub const RANK: i32 = 110;
pub const ELU: i32 = 111;
pub const REVERSE_SEQUENCE: i32 = 112;
pub const MATRIX_DIAG: i32 = 113;
pub const QUANTIZE: i32 = 114;
pub const MATRIX_SET_DIAG: i32 = 115;
pub const ROUND: i32 = 116;
pub const HARD_SWISH: i32 = 117;
pub const IF: i32 = 118;
pub const WHILE: i32 = 119;
pub const NON_MAX_SUPPRESSION_V4: i32 = 120;
pub const NON_MAX_SUPPRESSION_V5: i32 = 121;
pub const SCATTER_ND: i32 = 122;
pub const SELECT_V2: i32 = 123;
pub const DENSIFY: i32 = 124;
pub const SEGMENT_SUM: i32 = 125;
pub const BATCH_MATMUL: i32 = 126;
pub const PLACEHOLDER_FOR_GREATER_OP_CODES: i32 = 127;
pub const CUMSUM: i32 = 128;
pub const CALL_ONCE: i32 = 129;
pub const BROADCAST_TO: i32 = 130;
pub const RFFT2D: i32 = 131;
pub const CONV_3D: i32 = 132;
pub const IMAG: i32 = 133;
pub const REAL: i32 = 134;
pub const COMPLEX_ABS: i32 = 135;
pub const HASHTABLE: i32 = 136;
pub const HASHTABLE_FIND: i32 = 137;
pub const HASHTABLE_IMPORT: i32 = 138;
pub const HASHTABLE_SIZE: i32 = 139;
pub const REDUCE_ALL: i32 = 140;
pub const CONV_3D_TRANSPOSE: i32 = 141;
pub const VAR_HANDLE: i32 = 142;
pub const READ_VARIABLE: i32 = 143;
pub const ASSIGN_VARIABLE: i32 = 144;
pub const BROADCAST_ARGS: i32 = 145;
pub const RANDOM_STANDARD_NORMAL: i32 = 146;
pub const BUCKETIZE: i32 = 147;
pub const RANDOM_UNIFORM: i32 = 148;
pub const MULTINOMIAL: i32 = 149;
pub const GELU: i32 = 150;
pub const DYNAMIC_UPDATE_SLICE: i32 = 151;
pub const RELU_0_TO_1: i32 = 152;
pub const UNSORTED_SEGMENT_PROD: i32 = 153;
pub const UNSORTED_SEGMENT_MAX: i32 = 154;
pub const UNSORTED_SEGMENT_SUM: i32 = 155;
pub const ATAN2: i32 = 156;
pub const UNSORTED_SEGMENT_MIN: i32 = 157;
pub const SIGN: i32 = 158;
pub const BITCAST: i32 = 159;
pub const BITWISE_XOR: i32 = 160;
pub const RIGHT_SHIFT: i32 = 161;

/// The name of a builtin code ("CONV_2D"), or "BUILTIN_<n>" for codes newer than this table.
pub fn name(code: i32) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|c| NAMES.get(c))
        .map(|s| (*s).to_owned())
        .unwrap_or_else(|| format!("BUILTIN_{code}"))
}

//! A safe reader for Python pickles: it parses the opcode stream into plain values, but never
//! imports or calls anything. Each kind of file names the few globals it may reference (a
//! [`Dialect`]); any other global is refused before anything else happens.
//!
//! Two dialects: the CIFAR archives' numpy pickles — protocol 2 as written by Python 2's cPickle
//! (byte strings, `numpy.core.multiarray._reconstruct`) and protocols 2–5 as written by Python 3
//! with numpy 1.x or 2.x (`numpy._core...`, bytes through `_codecs.encode`, in-band buffers via
//! `_frombuffer`) — and `torch.save`'s `data.pkl` (tensors as `_rebuild_tensor_v2` of a storage
//! named by a persistent id, `collections.OrderedDict`, `argparse.Namespace`).

use std::collections::HashMap;
use std::rc::Rc;

/// What went wrong, without the file name (the caller adds it).
pub type PickleError = String;

/// The globals a numpy data pickle may reference.
const NUMPY_GLOBALS: [(&str, &str); 8] = [
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
];

/// The globals `torch.save` writes for state dicts, optimiser states and the official `opt`.
/// Tensor storages are data (`torch.FloatStorage` names a dtype); nothing here is ever called.
const TORCH_GLOBALS: [(&str, &str); 16] = [
    ("collections", "OrderedDict"),
    ("argparse", "Namespace"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("torch", "UntypedStorage"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
];

/// Which kind of file a pickle comes from: the globals it may name, whether persistent ids
/// (torch's references to storages stored outside the pickle) are allowed, and what the refusal
/// says is read instead.
#[derive(Clone, Copy, Debug)]
pub struct Dialect {
    globals: &'static [(&'static str, &'static str)],
    persistent_ids: bool,
    reads: &'static str,
}

impl Dialect {
    /// CIFAR's pickled numpy arrays.
    pub const NUMPY: Dialect = Dialect { globals: &NUMPY_GLOBALS, persistent_ids: false, reads: "numpy arrays" };
    /// `torch.save`'s `data.pkl`.
    pub const TORCH: Dialect =
        Dialect { globals: &TORCH_GLOBALS, persistent_ids: true, reads: "tensors, state dicts and argparse options" };
}

/// How deeply containers may nest. Real files nest a handful of levels (a state dict of
/// tensors, an optimiser state); a limit keeps hostile nesting from overflowing the stack.
pub const MAX_DEPTH: usize = 200;

/// How many objects (values pushed, marks, memo entries) a pickle may make: each costs ~120
/// bytes here, so a file of one-byte opcodes (10 MB of empty tuples: 1.3 GB unchecked) is stopped
/// at ~250 MB; real files make far fewer (a ResNet-18 checkpoint with its exit ~7,000, ~45 per
/// tensor: the cap is ~40,000 tensors; a CIFAR batch a few dozen).
pub const MAX_OBJECTS: usize = 2_000_000;

/// The longest key or name read ([`Value::as_key`]): real state-dict keys and option names are
/// under 100 bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// `text` cut to at most `max` characters (with `…`), for quoting a file's text in an error.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A parsed pickle value. Containers are shared (`Rc`) as in Python: an object the pickle
/// memoises and refers to again is one object, not a copy, so a small file cannot ask for an
/// exponential number of nodes. (Walking a value as a tree can still visit a shared object many
/// times: consumers that walk whole values bound their work, see `checkpoint::official`.)
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Rc<Vec<u8>>),
    Str(Rc<str>),
    List(Rc<Vec<Value>>),
    Tuple(Rc<Vec<Value>>),
    Dict(Rc<Vec<(Value, Value)>>),
    Global(Rc<str>, Rc<str>),
    /// `callable(*args)`, not called.
    Reduce(Rc<Value>, Rc<Value>),
    /// `obj.__setstate__(state)`, not called.
    Build(Rc<Value>, Rc<Value>),
    /// An object the pickle refers to by id (torch: `('storage', type, key, location, numel)`).
    PersistentId(Rc<Value>),
}

impl Value {
    /// Dictionary lookup by text key, whether the key was pickled as bytes or str (the last
    /// entry wins, as in Python). Compares without copying keys: a hostile dict may repeat one
    /// huge shared key many times.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(items) = self else { return None };
        items.iter().rev().find(|(k, _)| k.is_text(key)).map(|(_, v)| v)
    }

    /// Whether this is the text `key` (str, latin-1 bytes, or `_codecs.encode(str, 'latin1')`).
    pub fn is_text(&self, key: &str) -> bool {
        let latin1_eq =
            |b: &[u8]| b.len() == key.chars().count() && b.iter().zip(key.chars()).all(|(&b, c)| b as u32 == c as u32);
        match self {
            Value::Str(s) => &**s == key,
            Value::Bytes(b) => b.len() <= key.len() && latin1_eq(b),
            // A latin-1 character takes one or two bytes of UTF-8: longer text cannot match.
            Value::Reduce(_, args) => match args.as_seq().and_then(|a| a.first()) {
                Some(Value::Str(s)) if s.len() > 2 * key.len() => false,
                _ => self.as_bytes().is_some_and(|b| latin1_eq(&b)),
            },
            _ => false,
        }
    }

    /// The first `limit` text keys of a dict and how many keys it has (for error messages).
    pub fn some_keys(&self, limit: usize) -> (Vec<String>, usize) {
        match self {
            Value::Dict(items) => (
                items.iter().take(limit).filter_map(|(k, _)| k.as_key().ok().map(|k| shorten(&k, 40))).collect(),
                items.len(),
            ),
            _ => (Vec::new(), 0),
        }
    }

    /// The text of a dict key or name (state-dict keys, option names, storage keys), refused
    /// beyond [`MAX_KEY_BYTES`] before anything is copied: a hostile file may name one huge
    /// memoised key from many entries.
    pub fn as_key(&self) -> Result<String, PickleError> {
        let len = match self {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Reduce(_, args) => match args.as_seq().and_then(|a| a.first()) {
                // A latin-1 character is one or two bytes of UTF-8: count only short text.
                Some(Value::Str(s)) if s.len() > 2 * MAX_KEY_BYTES => s.len(),
                Some(Value::Str(s)) => s.chars().count(),
                Some(Value::Bytes(b)) => b.len(),
                _ => 0,
            },
            _ => 0,
        };
        if len > MAX_KEY_BYTES {
            return Err(format!("a key of {len} bytes (names are at most {MAX_KEY_BYTES})"));
        }
        self.as_text().ok_or_else(|| "a key is not text".to_string())
    }

    /// Text of a str, or of bytes read as latin-1 (Python 2 strings).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            Value::Reduce(..) => self.as_bytes().map(|b| b.iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Items of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// Raw bytes, including `_codecs.encode(text, 'latin1')` (how Python 3 pickles bytes at
    /// protocol 2) and Python 2 strings.
    pub fn as_bytes(&self) -> Option<Rc<Vec<u8>>> {
        match self {
            Value::Bytes(b) => Some(b.clone()),
            Value::Reduce(f, args) if is_global(f, "_codecs", "encode") || is_global(f, "builtins", "bytearray") => {
                let args = args.as_seq()?;
                let text = match args.first()? {
                    Value::Str(s) => s.clone(),
                    Value::Bytes(b) => return Some(b.clone()),
                    _ => return None,
                };
                // Compared in place: a hostile file may name one huge memoised "encoding" from
                // every key, and a copy per lookup would cost its size each time.
                let latin1 = |e: &Value| ["latin1", "latin-1", "iso-8859-1"].iter().any(|name| e.is_text(name));
                if !args.get(1).is_none_or(latin1) {
                    return None;
                }
                text.chars().map(|c| u8::try_from(c as u32).ok()).collect::<Option<Vec<u8>>>().map(Rc::new)
            }
            _ => None,
        }
    }
}

pub fn is_global(v: &Value, module: &str, name: &str) -> bool {
    matches!(v, Value::Global(m, n) if &**m == module && &**n == name)
}

fn is_array_global(v: &Value, name: &str) -> bool {
    matches!(v, Value::Global(m, n) if &**n == name && m.starts_with("numpy"))
}

/// A numpy array of unsigned bytes or integers, as read from a pickle.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    pub shape: Vec<usize>,
    /// numpy type string such as `u1`, `<i8`.
    pub dtype: String,
    pub data: Rc<Vec<u8>>,
    pub fortran_order: bool,
}

impl NdArray {
    /// Interprets `value` as a numpy array (either reconstruction recipe).
    pub fn from_value(value: &Value) -> Result<NdArray, PickleError> {
        match value {
            // _reconstruct(ndarray, (0,), b'b') followed by __setstate__((ver, shape, dtype, fortran, data))
            Value::Build(obj, state) => {
                match obj.as_ref() {
                    Value::Reduce(f, _) if is_array_global(f, "_reconstruct") => {}
                    _ => return Err("object is not a numpy array".into()),
                }
                let state = state.as_seq().ok_or("numpy array state is not a tuple")?;
                let (shape, dtype, fortran, data) = match state {
                    [_, shape, dtype, fortran, data] => (shape, dtype, fortran, data),
                    [shape, dtype, fortran, data] => (shape, dtype, fortran, data),
                    _ => return Err(format!("numpy array state has {} fields", state.len())),
                };
                let data =
                    data.as_bytes().ok_or("numpy array data is not raw bytes (object arrays are not supported)")?;
                NdArray::new(shape, dtype, fortran.as_int().unwrap_or(0) != 0, data)
            }
            // _frombuffer(buffer, dtype, shape, order) — protocol 5
            Value::Reduce(f, args) if is_array_global(f, "_frombuffer") => {
                let args = args.as_seq().ok_or("_frombuffer arguments are not a tuple")?;
                let [buffer, dtype, shape, order] = args else {
                    return Err(format!("_frombuffer takes 4 arguments, got {}", args.len()));
                };
                let data = buffer.as_bytes().ok_or("_frombuffer buffer is not in-band bytes")?;
                NdArray::new(shape, dtype, order.is_text("F"), data)
            }
            _ => Err("value is not a numpy array".into()),
        }
    }

    fn new(shape: &Value, dtype: &Value, fortran_order: bool, data: Rc<Vec<u8>>) -> Result<NdArray, PickleError> {
        let shape = shape
            .as_seq()
            .ok_or("numpy array shape is not a tuple")?
            .iter()
            .map(|d| d.as_int().and_then(|d| usize::try_from(d).ok()).ok_or("numpy array shape is not integers"))
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = dtype_string(dtype)?;
        let array = NdArray { shape, dtype, data, fortran_order };
        let expected = array
            .shape
            .iter()
            .try_fold(array.item_size()?, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("numpy array shape {:?} overflows", array.shape))?;
        if array.data.len() != expected {
            return Err(format!(
                "numpy array {:?} of {} needs {expected} bytes, found {}",
                array.shape,
                array.dtype,
                array.data.len()
            ));
        }
        Ok(array)
    }

    fn item_size(&self) -> Result<usize, PickleError> {
        let digits: String = self.dtype.chars().filter(char::is_ascii_digit).collect();
        digits.parse().map_err(|_| format!("unsupported numpy dtype '{}'", shorten(&self.dtype, 40)))
    }

    /// Elements as unsigned bytes (dtype `u1`/`|u1`), in C order.
    pub fn to_u8(&self) -> Result<Vec<u8>, PickleError> {
        if !matches!(self.dtype.trim_start_matches(['|', '<', '=']), "u1") {
            return Err(format!("expected a uint8 array, found dtype '{}'", shorten(&self.dtype, 40)));
        }
        if self.fortran_order && self.shape.len() > 1 {
            return Err("Fortran-ordered arrays are not supported".into());
        }
        Ok(self.data.as_ref().clone())
    }

    /// Elements as i64 from any little-endian integer dtype.
    pub fn to_i64(&self) -> Result<Vec<i64>, PickleError> {
        let t = self.dtype.trim_start_matches(['|', '<', '=']);
        let d = &self.data;
        Ok(match t {
            "u1" => d.iter().map(|&b| b as i64).collect(),
            "i1" => d.iter().map(|&b| b as i8 as i64).collect(),
            "i2" => d.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            "u2" => d.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            "i4" => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            "u4" => d.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            "i8" => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            _ => return Err(format!("expected an integer array, found dtype '{}'", shorten(&self.dtype, 40))),
        })
    }
}

/// `dtype('u1')` pickled as `Build(Reduce(numpy.dtype, ('u1', False, True)), state)`; the state's
/// second field is the byte order ('|', '<', '>').
fn dtype_string(v: &Value) -> Result<String, PickleError> {
    let (ctor, state) = match v {
        Value::Build(obj, state) => (obj.as_ref(), Some(state.as_ref())),
        other => (other, None),
    };
    let Value::Reduce(f, args) = ctor else { return Err("numpy dtype is not a dtype object".into()) };
    if !is_global(f, "numpy", "dtype") {
        return Err("numpy dtype is not a dtype object".into());
    }
    let name = args
        .as_seq()
        .and_then(|a| a.first())
        .ok_or("numpy dtype has no type name")?
        .as_key()
        .map_err(|e| format!("numpy dtype name: {e}"))?;
    let big_endian = state.and_then(Value::as_seq).and_then(|s| s.get(1)).is_some_and(|o| o.is_text(">"));
    if big_endian && !name.ends_with('1') {
        return Err(format!("big-endian numpy dtype '{}' is not supported", shorten(&name, 40)));
    }
    Ok(name)
}

/// Parses a whole numpy data pickle.
pub fn parse(bytes: &[u8]) -> Result<Value, PickleError> {
    parse_as(bytes, Dialect::NUMPY)
}

/// Parses a whole pickle of the given dialect.
pub fn parse_as(bytes: &[u8], dialect: Dialect) -> Result<Value, PickleError> {
    let mut machine = Machine {
        input: bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
        objects: 0,
        dialect,
    };
    let root = machine.run()?;
    Freezer { nodes: &machine.nodes, done: HashMap::new(), open: vec![false; machine.nodes.len()] }.freeze(&root, 0)
}

/// A value on the machine's stack: a finished leaf, or a container in the arena (containers are
/// mutable until the end — APPEND, SETITEM — and every reference to one sees the same object).
#[derive(Clone, Debug)]
enum Item {
    Leaf(Value),
    Node(usize),
}

#[derive(Debug)]
enum Node {
    List(Vec<Item>),
    Tuple(Vec<Item>),
    Dict(Vec<(Item, Item)>),
    Reduce(Item, Item),
    Build(Item, Item),
    PersistentId(Item),
}

struct Machine<'a> {
    dialect: Dialect,
    input: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    /// Memo entries refer to stack items (containers by arena index: shared, never copied).
    memo: HashMap<u64, Item>,
    nodes: Vec<Node>,
    /// Objects made so far (stack pushes and memo entries), against [`MAX_OBJECTS`].
    objects: usize,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.input.len()).ok_or_else(|| {
            format!("truncated pickle: needs {n} more bytes at offset {} of {}", self.pos, self.input.len())
        })?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.input[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("truncated pickle: unterminated line")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    /// Counts one more object against [`MAX_OBJECTS`].
    fn made(&mut self) -> Result<(), PickleError> {
        self.objects += 1;
        if self.objects > MAX_OBJECTS {
            return Err(format!(
                "pickle makes more than {MAX_OBJECTS} objects (a ResNet-18 checkpoint makes ~7,000): refused"
            ));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        self.made()?;
        self.stack.push(Item::Leaf(v));
        Ok(())
    }

    fn push_node(&mut self, node: Node) -> Result<(), PickleError> {
        self.made()?;
        self.nodes.push(node);
        self.stack.push(Item::Node(self.nodes.len() - 1));
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        if self.marks.last().is_some_and(|m| *m >= self.stack.len()) {
            return Err("malformed pickle: pop across a mark".into());
        }
        self.stack.pop().ok_or_else(|| "malformed pickle: stack underflow".into())
    }

    /// The container on top of the stack, for APPEND / SETITEM.
    fn top_node(&mut self) -> Result<&mut Node, PickleError> {
        match self.stack.last() {
            Some(Item::Node(i)) => Ok(&mut self.nodes[*i]),
            Some(Item::Leaf(_)) => Err("malformed pickle: adding items to a non-container".into()),
            None => Err("malformed pickle: empty stack".into()),
        }
    }

    fn top(&self) -> Result<Item, PickleError> {
        self.stack.last().cloned().ok_or_else(|| "malformed pickle: empty stack".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let mark = self.marks.pop().ok_or("malformed pickle: no mark")?;
        if mark > self.stack.len() {
            return Err("malformed pickle: mark beyond stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn bytes(&mut self, n: usize) -> Result<Value, PickleError> {
        Ok(Value::Bytes(Rc::new(self.take(n)?.to_vec())))
    }

    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        let raw = self.take(n)?;
        let s = std::str::from_utf8(raw).map_err(|_| "malformed pickle: invalid UTF-8 string")?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn global(&self, module: String, name: String) -> Result<Value, PickleError> {
        if self.dialect.globals.iter().any(|(m, n)| *m == module && *n == name) {
            Ok(Value::Global(module.into(), name.into()))
        } else {
            Err(format!(
                "refusing pickle global {}.{}: only {} and plain data are read, nothing is called",
                shorten(&module, 60),
                shorten(&name, 60),
                self.dialect.reads
            ))
        }
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        self.made()?;
        let v = self.top()?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let v = self.memo.get(&key).cloned().ok_or_else(|| format!("malformed pickle: memo entry {key} missing"))?;
        self.made()?;
        self.stack.push(v);
        Ok(())
    }

    fn is_empty_tuple(&self, item: &Item) -> bool {
        match item {
            Item::Node(i) => matches!(&self.nodes[*i], Node::Tuple(t) if t.is_empty()),
            Item::Leaf(_) => false,
        }
    }

    fn is_dict(&self, item: &Item) -> bool {
        matches!(item, Item::Node(i) if matches!(self.nodes[*i], Node::Dict(_)))
    }

    fn leaf_text(item: Item, what: &str) -> Result<String, PickleError> {
        match item {
            Item::Leaf(v) => v.as_key().map_err(|e| format!("malformed pickle: {what}: {e}")),
            Item::Node(_) => Err(format!("malformed pickle: {what}")),
        }
    }

    fn run(&mut self) -> Result<Item, PickleError> {
        loop {
            let op = self.u8().map_err(|_| "truncated pickle: no STOP opcode".to_string())?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: only a length hint
                }
                b'.' => return self.pop(),
                b'(' => {
                    self.made()?;
                    self.marks.push(self.stack.len())
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().unwrap());
                    self.push(Value::Int(v as i64))?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let raw = self.take(n)?;
                    if n > 8 {
                        return Err("pickle integer too large".into());
                    }
                    let mut buf = if raw.last().is_some_and(|b| b & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(raw);
                    self.push(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'I' => {
                    let line = self.line()?;
                    let v = match line.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => {
                            Value::Int(s.parse().map_err(|_| format!("malformed pickle integer '{}'", shorten(s, 30)))?)
                        }
                    };
                    self.push(v)?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))?
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                0x8e | 0x96 => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "pickle bytes too large")?;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "pickle string too large")?;
                    let v = self.text(n)?;
                    self.push(v)?
                }
                b'}' => self.push_node(Node::Dict(Vec::new()))?,
                b']' => self.push_node(Node::List(Vec::new()))?,
                b')' => self.push_node(Node::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items))?
                }
                b'd' => {
                    let items = pairs(self.pop_mark()?)?;
                    self.push_node(Node::Dict(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_node(Node::Tuple(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top_node()? {
                        Node::List(items) => items.push(v),
                        _ => return Err("malformed pickle: APPEND to a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top_node()? {
                        Node::List(list) => list.extend(items),
                        _ => return Err("malformed pickle: APPENDS to a non-list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top_node()? {
                        Node::Dict(d) => d.push((k, v)),
                        _ => return Err("malformed pickle: SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    match self.top_node()? {
                        Node::Dict(d) => d.extend(items),
                        _ => return Err("malformed pickle: SETITEMS on a non-dict".into()),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(module, name)?;
                    self.push(g)?
                }
                0x93 => {
                    let name = Self::leaf_text(self.pop()?, "STACK_GLOBAL name")?;
                    let module = Self::leaf_text(self.pop()?, "STACK_GLOBAL module")?;
                    let g = self.global(module, name)?;
                    self.push(g)?
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    // An empty OrderedDict is a dict that SETITEMS then fills.
                    let ordered_dict = matches!(&f, Item::Leaf(g) if is_global(g, "collections", "OrderedDict"));
                    if ordered_dict && self.is_empty_tuple(&args) {
                        self.push_node(Node::Dict(Vec::new()))?
                    } else {
                        self.push_node(Node::Reduce(f, args))?
                    }
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    if self.is_dict(&obj) {
                        // An OrderedDict's instance attributes (a state dict's `_metadata`: module
                        // versions) are not part of its items.
                        self.stack.push(obj)
                    } else {
                        self.push_node(Node::Build(obj, state))?
                    }
                }
                b'Q' if self.dialect.persistent_ids => {
                    let id = self.pop()?;
                    self.push_node(Node::PersistentId(id))?
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()? as u64;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u64;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()? as u64;
                    self.memo_get(k)?
                }
                other => {
                    return Err(format!("unsupported pickle opcode 0x{other:02x} at offset {}", self.pos - 1));
                }
            }
        }
    }
}

fn pairs(items: Vec<Item>) -> Result<Vec<(Item, Item)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err("malformed pickle: odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// Turns the arena into shared values: each container once (`done`), so memoised objects stay
/// shared; nesting deeper than [`MAX_DEPTH`] and objects that contain themselves are refused.
struct Freezer<'n> {
    nodes: &'n [Node],
    /// Frozen containers with their height (levels of containers from them down, themselves
    /// included): a shared object's height counts wherever it is placed.
    done: HashMap<usize, (Value, usize)>,
    /// Containers being frozen right now (the path from the root): meeting one again is a cycle.
    open: Vec<bool>,
}

impl Freezer<'_> {
    /// The frozen value of `item` placed `depth` containers deep.
    fn freeze(&mut self, item: &Item, depth: usize) -> Result<Value, PickleError> {
        self.freeze_with_height(item, depth).map(|(v, _)| v)
    }

    fn freeze_with_height(&mut self, item: &Item, depth: usize) -> Result<(Value, usize), PickleError> {
        let too_deep = || format!("pickle nests containers more than {MAX_DEPTH} levels deep");
        let i = match item {
            Item::Leaf(v) => return Ok((v.clone(), 0)),
            Item::Node(i) => *i,
        };
        if let Some((v, height)) = self.done.get(&i) {
            if depth + height > MAX_DEPTH {
                return Err(too_deep());
            }
            return Ok((v.clone(), *height));
        }
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        if self.open[i] {
            return Err("pickle holds an object that contains itself (recursive objects are not read)".into());
        }
        self.open[i] = true;
        let d = depth + 1;
        let mut height = 0;
        let mut f = |this: &mut Self, item: &Item| -> Result<Value, PickleError> {
            let (v, h) = this.freeze_with_height(item, d)?;
            height = height.max(h);
            Ok(v)
        };
        let v = match &self.nodes[i] {
            Node::List(items) => Value::List(Rc::new(items.iter().map(|x| f(self, x)).collect::<Result<_, _>>()?)),
            Node::Tuple(items) => Value::Tuple(Rc::new(items.iter().map(|x| f(self, x)).collect::<Result<_, _>>()?)),
            Node::Dict(items) => Value::Dict(Rc::new(
                items.iter().map(|(k, v)| Ok((f(self, k)?, f(self, v)?))).collect::<Result<_, PickleError>>()?,
            )),
            Node::Reduce(g, args) => Value::Reduce(Rc::new(f(self, g)?), Rc::new(f(self, args)?)),
            Node::Build(obj, state) => Value::Build(Rc::new(f(self, obj)?), Rc::new(f(self, state)?)),
            Node::PersistentId(id) => Value::PersistentId(Rc::new(f(self, id)?)),
        };
        self.open[i] = false;
        self.done.insert(i, (v.clone(), height + 1));
        Ok((v, height + 1))
    }
}

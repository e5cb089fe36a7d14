// Shared by the Avro targets (included with `include!`).

const WRITER: &str = r#"{"type":"record","name":"Event","namespace":"fuzz","fields":[
  {"name":"id","type":"long"},
  {"name":"count","type":"int"},
  {"name":"name","type":"string"},
  {"name":"flag","type":"boolean"},
  {"name":"score","type":"double"},
  {"name":"raw","type":"bytes"},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"attrs","type":{"type":"map","values":"long"}},
  {"name":"maybe","type":["null","string","long"]},
  {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
  {"name":"hash","type":{"type":"fixed","name":"Hash","size":4}},
  {"name":"child","type":["null",{"type":"record","name":"Child","fields":[{"name":"x","type":"float"}]}]}
]}"#;

const READER: &str = r#"{"type":"record","name":"Event","namespace":"fuzz","fields":[
  {"name":"id","type":"long"},
  {"name":"total","aliases":["count"],"type":"long"},
  {"name":"name","type":"string"},
  {"name":"added","type":"string","default":"none"},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"maybe","type":["null","string","long"]}
]}"#;

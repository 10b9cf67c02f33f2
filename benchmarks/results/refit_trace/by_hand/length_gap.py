# Run by hand (python, from the repository root): cosine between the pre-trained encoder's
# 160- and 256-token embeddings of 400 random SciFact passages, and how many exceed 160 tokens.
# Printed: cache vs e256 1.0000; e160 vs e256 0.9562 (min 0.8233); tokens > 160: 0.95, > 256: 0.70.
import numpy as np, torch
from pathlib import Path
from freshen.cache import load_cache
from freshen.modeling.encoder import Encoder
from freshen.encoding import encode
from freshen.steps.common import prepared
from freshen.config import load_params
params=load_params('params.yaml')
c=load_cache('artifacts/cache/initial')
ds=prepared(params, Path('.'))
idx=np.random.default_rng(0).choice(len(c.ids),400,replace=False)
texts=ds.doc_texts([c.ids[i] for i in idx])
enc=Encoder.from_params(params['model'])
e160=torch.from_numpy(encode(enc,texts,"passage",max_len=160))
e256=torch.from_numpy(encode(enc,texts,"passage",max_len=256))
cache=torch.from_numpy(np.asarray(c.embeddings,dtype=np.float32)[idx])
cos=lambda a,b: torch.nn.functional.cosine_similarity(a,b,dim=-1)
print('cache vs e256', float(cos(cache,e256).mean()))
print('e160 vs e256 (same initial encoder)', float(cos(e160,e256).mean()), 'min', float(cos(e160,e256).min()))
ntok=np.array([len(enc.tokenizer(t)['input_ids']) for t in texts])
print('tokens >160:', (ntok>160).mean(), '>256:', (ntok>256).mean(), 'median', np.median(ntok))

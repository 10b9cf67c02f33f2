import numpy as np, torch
from pathlib import Path
from freshen.cache import load_cache
from freshen.modeling.corrector import Corrector
from freshen.modeling.encoder import Encoder
from freshen.encoding import encode
from freshen.training.losses import drift_loss
from freshen.steps.common import prepared
from freshen.config import load_params
torch.set_num_threads(1)
c=load_cache('artifacts/cache/initial')
s=torch.from_numpy(np.asarray(c.embeddings,dtype=np.float32)).half().float()
d=torch.load('/work/exp/diag/d50/refit.pt', weights_only=True)
ds=prepared(load_params('params.yaml'), Path('.'))
texts=ds.doc_texts(c.ids)
enc=Encoder.load('/work/exp/diag/d50/enc50')
f160=torch.from_numpy(np.load('/work/exp/diag/d50/fresh50.npy'))
f256=torch.from_numpy(encode(enc, texts, "passage", max_len=256)); np.save('/work/exp/diag/d50/fresh50_256.npy', f256.numpy())
cos=lambda a,b: float(torch.nn.functional.cosine_similarity(a,b,dim=-1).mean())
pr=d['probe_rows']; tr=d['rows']; mask=torch.ones(len(s),dtype=torch.bool); mask[tr]=False; mask[pr]=False; te=torch.nonzero(mask).squeeze(1)
for name,f in (('fresh@160',f160),('fresh@256',f256)):
    torch.manual_seed(0)
    h=Corrector(384,'residual_mlp',384,1,False); opt=torch.optim.Adam(h.parameters(),lr=1e-3)
    for _ in range(100):
        for b in torch.split(tr[torch.randperm(len(tr))],256):
            l=drift_loss(h(s[b]),f[b]); opt.zero_grad(); l.backward(); opt.step()
    with torch.no_grad(): print(name, 'stale held-out', round(cos(s[te],f[te]),4), 'fit train/held-out', round(cos(h(s[tr]),f[tr]),4), round(cos(h(s[te]),f[te]),4), flush=True)

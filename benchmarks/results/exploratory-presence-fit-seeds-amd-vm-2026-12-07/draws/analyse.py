"""Thresholds of single draws and of groups of four from one --draws 12 fit's frames; writes the groups' models."""
import json
from pathlib import Path
import numpy as np
from benchmarks.presence import FOUND_DSC
from realtime.appearance import FEATURES, AppearanceModel
from tools.presence_fit import (DRAW_STRIDE, NERVE_FREE, entry_threshold, fit_logistic, fitted, labels,
                                threshold_out_of_fold)

D = Path('runs/lens/draws')
rows = json.load(open(D / 'frames-12.json'))['fit']
base = [r for r in rows if 'draw' not in r]
def fit(draws):
    sel = base + [r for r in rows if r.get('draw') in draws]
    usable = [r for r in sel if r['features'] is not None]
    groups = [r['id'].split('-')[0] if r['id'].startswith('Pz') else 'phantom' for r in usable]
    oof, hold = threshold_out_of_fold(usable, groups, 10, 0.01, FOUND_DSC, seed=DRAW_STRIDE * draws[0],
                                      deals=len(draws))
    t, choice = entry_threshold(usable, oof, hold, 0.05, 0.95, FOUND_DSC,
                                nerve_free=sum(r['kind'] in NERVE_FREE for r in sel))
    return usable, t, hold, choice
single = []
for r in range(12):
    _, t, h, _ = fit([r]); single.append((t, h)); print('draw', r, f'entry {t:.3f} hold {h:.3f}', flush=True)
grouped = []
for g in range(3):
    draws = list(range(4 * g, 4 * g + 4))
    usable, t, h, choice = fit(draws); grouped.append((t, h))
    print('group', draws, f'entry {t:.3f} hold {h:.3f}', flush=True)
    y = labels(usable, FOUND_DSC); tr = fitted(usable); X = np.array([r['features'] for r in usable])
    mean, scale, w, b = fit_logistic(X[tr], y[tr])
    m = AppearanceModel(features=FEATURES, mean=tuple(mean), scale=tuple(scale), weights=tuple(w), bias=b, threshold=t,
                        hold_threshold=h, provenance={'fit_by': f'runs/lens/draws/analyse.py draws {draws} of '
                                                      'runs/lens/draws/frames-12.json (= --fit-seed %d --draws 4)'
                                                      % (DRAW_STRIDE * draws[0]),
                                                      'out_of_fold': choice, 'draws': 4})
    (D / f'group-{g}').mkdir(exist_ok=True); m.save(D / f'group-{g}' / 'appearance.json')
S, G = np.array(single), np.array(grouped)
out = {'single': single, 'groups': grouped, 'sd_single': S.std(0, ddof=1).tolist(),
       'sd_groups': G.std(0, ddof=1).tolist(),
       'mean_single': S.mean(0).tolist(), 'mean_groups': G.mean(0).tolist()}
out['ratio'] = (G.std(0, ddof=1) / S.std(0, ddof=1)).tolist()
print(json.dumps({k: out[k] for k in ('sd_single', 'sd_groups', 'ratio', 'mean_single', 'mean_groups')}))
(D / 'analysis.json').write_text(json.dumps(out, indent=1))

"""One registry per kind a preset names (attack kinds, datasets, regularizers, figure kinds):
each the single source of its schema enum, ids, cost and the function that does the work.
No torch."""

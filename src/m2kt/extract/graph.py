"""The abstraction graph (part G): concepts, their abstract parents, typed weighted edges.

Three sources, in this order: the parents the spec names (is-a, weight 1); agglomerative
clustering of the concept embeddings (average linkage on centred cosine distance), whose merges
become abstract nodes joined by is-a edges weighted by the similarity at which they merge,
(1 + cosine) / 2; and a
`related` edge from each concept to its nearest neighbour. networkx checks that is-a is acyclic.
"""

from __future__ import annotations

import networkx as nx
import torch
from scipy.cluster.hierarchy import linkage
from torch.nn import functional as F

from m2kt.concepts.sets import ConceptSet
from m2kt.concepts.spec import ConceptSpec, SpecError, slug


def abstraction_graph(concepts: ConceptSet, spec: ConceptSpec | None) -> dict[str, list[dict]]:
    """Nodes and edges as the manifest stores them."""
    graph = nx.DiGraph()
    names = {g.id: g.name for g in concepts.groups}
    for group in concepts.groups:
        graph.add_node(group.id, name=group.name, kind="concept")
    by_name = {g.name: g.id for g in concepts.groups}
    for entry in spec.concepts if spec is not None else []:
        if entry.id not in names:
            continue
        for parent in entry.parents:
            target = by_name.get(parent) or f"parent:{slug(parent)}"
            if target not in graph:
                graph.add_node(target, name=parent, kind="abstract")
            graph.add_edge(entry.id, target, type="is-a", weight=1.0)
    _add_hierarchy(graph, concepts)
    _add_related(graph, concepts)
    is_a = nx.DiGraph([(u, v) for u, v, d in graph.edges(data=True) if d["type"] == "is-a"])
    if not nx.is_directed_acyclic_graph(is_a):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(is_a))
        raise SpecError(f"the concept parents form a cycle: {cycle}")
    return {
        "nodes": [
            {"id": n, "name": d["name"], "kind": d["kind"]} for n, d in graph.nodes(data=True)
        ],
        "edges": [
            {"source": u, "target": v, "type": d["type"], "weight": d["weight"]}
            for u, v, d in graph.edges(data=True)
        ],
    }


def _centred_unit(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings - embeddings.mean(0, keepdim=True), dim=-1)


def _add_hierarchy(graph: nx.DiGraph, concepts: ConceptSet) -> None:
    count = len(concepts.groups)
    if count < 3:
        return
    unit = _centred_unit(concepts.embeddings).double().numpy()
    merges = linkage(unit, method="average", metric="cosine")
    members: dict[int, list[str]] = {i: [g.name] for i, g in enumerate(concepts.groups)}
    node_of = {i: g.id for i, g in enumerate(concepts.groups)}
    for step, (left, right, distance, _) in enumerate(merges):
        index = count + step
        members[index] = members[int(left)] + members[int(right)]
        shown = members[index][:3]
        name = " + ".join(shown) + (
            f" + {len(members[index]) - 3} more" if len(members[index]) > 3 else ""
        )
        node_of[index] = f"group:{step}"
        graph.add_node(node_of[index], name=name[:256], kind="abstract")
        weight = round(1.0 - float(distance) / 2.0, 6)  # (1 + cosine) / 2, in [0, 1]
        for child in (int(left), int(right)):
            graph.add_edge(node_of[child], node_of[index], type="is-a", weight=weight)


def _add_related(graph: nx.DiGraph, concepts: ConceptSet) -> None:
    if len(concepts.groups) < 2:
        return
    unit = _centred_unit(concepts.embeddings)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-2.0)
    for i, group in enumerate(concepts.groups):
        j = int(similarity[i].argmax())
        value = float(similarity[i, j])
        other = concepts.groups[j].id
        if (
            value > 0
            and not graph.has_edge(group.id, other)
            and not graph.has_edge(other, group.id)
        ):
            graph.add_edge(group.id, other, type="related", weight=round(value, 6))

"""Connected components of a large undirected graph, entirely in Spark (the graph never reaches the driver).

Alternating Large-Star / Small-Star (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014), on
DataFrames of edges oriented (u, v) with u > v:

* Large-Star: every node u links each larger neighbour v to m(u) = min(Γ(u) ∪ {u}).
* Small-Star: every node u links itself and each smaller neighbour v to m = min of its smaller neighbours.

Rounds repeat until the edges form stars whose centres are the smallest node of each component (the algorithm's
fixed point, reached in O(log^2 n) rounds; already true before the first round for most dedup graphs). Every round's edges are checkpointed (reliable checkpoint when
the context has a checkpoint dir, else localCheckpoint) so the lineage stays one round long.
"""
from __future__ import annotations


def _cut(df):
    """Cut the lineage; lazy, so the next action both materialises and uses it (one Spark job, not two)."""
    sc = df.sparkSession.sparkContext
    if sc.getCheckpointDir():
        return df.checkpoint(eager=False)
    return df.localCheckpoint(eager=False)


def _is_star_forest(e) -> bool:
    """True when no smaller endpoint is also a larger one: every component is then a star around its smallest
    node, which is the fixed point of the algorithm (one Spark job)."""
    from pyspark.sql import functions as F

    return e.join(e.select(F.col("u").alias("v")), "v", "left_semi").count() == 0


def connected_components(edges, src: str = "src", dst: str = "dst", max_iterations: int = 60):
    """Return (DataFrame[node, component], rounds): for every node that appears in `edges`, the smallest node id
    of its component. Node ids may be any orderable type (strings here); self loops and duplicates are ignored."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    e = (edges.select(F.col(src).alias("a"), F.col(dst).alias("b"))
         .where(F.col("a").isNotNull() & F.col("b").isNotNull() & (F.col("a") != F.col("b")))
         .select(F.greatest("a", "b").alias("u"), F.least("a", "b").alias("v"))
         .distinct())
    e = _cut(e)
    rounds = 0
    while not _is_star_forest(e):
        if rounds >= max_iterations:
            raise RuntimeError(f"connected components did not converge in {max_iterations} rounds")
        rounds += 1
        # Large-Star over both directions of every edge
        both = e.unionByName(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
        m = F.least(F.col("u"), F.min("v").over(Window.partitionBy("u")))
        large = (both.withColumn("m", m).where(F.col("v") > F.col("u"))
                 .select(F.col("v").alias("u"), F.col("m").alias("v")).distinct())
        # Small-Star: edges are (bigger, smaller) so each u's neighbours here are all smaller than u
        s = large.withColumn("m", F.min("v").over(Window.partitionBy("u")))
        small = (s.where(F.col("v") != F.col("m")).select(F.col("v").alias("u"), F.col("m").alias("v"))
                 .unionByName(s.select("u", F.col("m").alias("v")))
                 .distinct())
        e = _cut(small)
    comp = (e.select(F.col("u").alias("node"), F.col("v").alias("component"))
            .unionByName(e.select(F.col("v").alias("node"), F.col("v").alias("component")))
            .distinct())
    return comp, rounds


def _local_fn(src: str, dst: str):
    """mapInArrow over one partition holding every edge: (node, component) by udfs.graph.min_label_components on
    the nodes' ranks in byte order of their ids (Spark's string order), so the smallest id names a component."""
    def fn(batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        from udfs.graph import min_label_components

        batches = list(batches)
        if not batches:
            return
        t = pa.Table.from_batches(batches)
        if t.num_rows == 0:
            return
        a, b = t.column(src).combine_chunks(), t.column(dst).combine_chunks()
        keep = pc.and_(pc.and_(pc.is_valid(a), pc.is_valid(b)), pc.not_equal(a, b))
        keep = pc.fill_null(keep, False)
        a, b = pc.filter(a, keep), pc.filter(b, keep)
        if len(a) == 0:
            return
        uniq = pc.unique(pa.concat_arrays([a, b]))
        nodes = pc.take(uniq, pc.sort_indices(uniq))
        ra = pc.index_in(a, value_set=nodes).to_numpy()
        rb = pc.index_in(b, value_set=nodes).to_numpy()
        labels = min_label_components(ra, rb, len(nodes))
        comp = pc.take(nodes, pa.array(labels))
        yield pa.RecordBatch.from_arrays([nodes.cast(pa.string()), comp.cast(pa.string())], names=["node", "component"])

    return fn


def local_components(edges, src: str = "src", dst: str = "dst"):
    """DataFrame[node, component] like connected_components, computed in one Spark task (all edges in one Python
    worker): for edge lists of up to a few million rows, where one task beats a dozen Spark jobs per round. Node
    ids must be strings."""
    from pyspark.sql import functions as F

    e = edges.select(F.col(src).cast("string").alias("a"), F.col(dst).cast("string").alias("b"))
    return e.coalesce(1).mapInArrow(_local_fn("a", "b"), "node string, component string")

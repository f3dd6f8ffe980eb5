// Embed FASTA files with Nextflow: one process per shard, then a merge.
//
//   nextflow run deploy/nextflow/main.nf --fasta proteome.fasta --shards 8 --outdir results
//
// Nextflow retries a failed task in a fresh work directory, so a retried
// shard starts over; resuming inside a task needs its output on storage that
// survives the task (publish it, or run esm2go from a fixed --out path).

params.fasta  = 'proteome.fasta'
params.shards = 8
params.model  = 'facebook/esm2_t33_650M_UR50D'
params.outdir = 'results'

process EMBED {
    accelerator 1
    errorStrategy 'retry'
    maxRetries 3

    input:
    tuple path(fasta), val(i)

    output:
    path "emb.shard-${i}.parquet"

    script:
    """
    esm2go embed --model ${params.model} --device cuda --shard ${i}/${params.shards} \\
        --out emb.shard-${i}.parquet ${fasta}
    """
}

process MERGE {
    publishDir params.outdir, mode: 'copy'

    input:
    path shards

    output:
    path 'emb.parquet'

    script:
    """
    esm2go merge emb.parquet ${shards}
    """
}

workflow {
    def fasta = file(params.fasta)
    Channel.of(0..<params.shards).map { i -> tuple(fasta, i) } | EMBED | collect | MERGE
}

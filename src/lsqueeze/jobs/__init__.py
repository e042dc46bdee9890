"""The CLI's commands that compute or fetch something: data, train, evaluate, analysis, cost,
export. A job never imports another job."""

//! Taking work from a queue in batches: what arrived while the last batch was on its way goes
//! together in the next. The control plane's proposer packs writes into one raft entry this
//! way, reads share read-index rounds, followers forward beats and writes to the leader, and a
//! node sends its instances' reports: each with its own limits on what one batch may hold.

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

/// The next batch from `queue`: the item `held` back from the last batch (or the next to
/// arrive), then whatever else is queued already, at most `max` in all. `admit` is asked of
/// each item in turn, the first included (so it can count or record it); the first is taken
/// whatever it answers, so that every item is taken eventually, and the first item it refuses
/// after that ends the batch and is held for the next. `None` once the queue is closed and
/// nothing is held.
pub async fn next_batch<T>(
    queue: &mut UnboundedReceiver<T>,
    held: &mut Option<T>,
    max: usize,
    mut admit: impl FnMut(&T) -> bool,
) -> Option<Vec<T>> {
    let first = match held.take() {
        Some(item) => item,
        None => queue.recv().await?,
    };
    admit(&first);
    let mut batch = vec![first];
    while batch.len() < max {
        let Ok(next) = queue.try_recv() else { break };
        if !admit(&next) {
            *held = Some(next);
            break;
        }
        batch.push(next);
    }
    Some(batch)
}

/// Gives each of `replies` its own answer from `answers` (one per item of the batch, in
/// order); when the batch failed, every one gets its error, and when it was answered with a
/// different count, every one gets `miscounted(items, answers)`.
pub fn answer_each<T, E: Clone>(
    replies: Vec<oneshot::Sender<Result<T, E>>>,
    answers: Result<Vec<T>, E>,
    miscounted: impl FnOnce(usize, usize) -> E,
) {
    let answers: Vec<Result<T, E>> = match answers {
        Ok(answers) if answers.len() == replies.len() => answers.into_iter().map(Ok).collect(),
        Ok(answers) => {
            let e = miscounted(replies.len(), answers.len());
            replies.iter().map(|_| Err(e.clone())).collect()
        }
        Err(e) => replies.iter().map(|_| Err(e.clone())).collect(),
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_its_maximum() {
        let (send, mut queue) = mpsc::unbounded_channel();
        for n in 0..5 {
            send.send(n).unwrap();
        }
        let mut held = None;
        assert_eq!(next_batch(&mut queue, &mut held, 3, |_| true).await, Some(vec![0, 1, 2]));
        assert_eq!(next_batch(&mut queue, &mut held, 3, |_| true).await, Some(vec![3, 4]));
        drop(send);
        assert_eq!(next_batch(&mut queue, &mut held, 3, |_| true).await, None, "closed and empty");
    }

    #[tokio::test]
    async fn a_refused_item_starts_the_next_batch() {
        let (send, mut queue) = mpsc::unbounded_channel();
        for n in [4, 5, 9, 1, 2] {
            send.send(n).unwrap();
        }
        drop(send);
        let mut held = None;
        // At most 10 in sum per batch: 4 + 5, then 9 (refused after them) + 1, then 2.
        let mut batches = Vec::new();
        loop {
            let mut sum = 0;
            let Some(batch) = next_batch(&mut queue, &mut held, usize::MAX, |n| {
                sum += n;
                sum <= 10
            })
            .await
            else {
                break;
            };
            batches.push(batch);
        }
        assert_eq!(batches, vec![vec![4, 5], vec![9, 1], vec![2]]);
    }

    #[tokio::test]
    async fn each_reply_gets_its_own_answer_or_the_batch_s_error() {
        let replies = |n| -> (Vec<_>, Vec<_>) { (0..n).map(|_| oneshot::channel::<Result<u8, String>>()).unzip() };
        let miscounted = |items, answers| format!("{items} items, {answers} answers");
        let (senders, receivers) = replies(2);
        answer_each(senders, Ok(vec![7, 8]), miscounted);
        assert_eq!(futures::future::join_all(receivers).await, vec![Ok(Ok(7)), Ok(Ok(8))]);
        let (senders, receivers) = replies(2);
        answer_each(senders, Ok(vec![7]), miscounted);
        let expected = Ok(Err("2 items, 1 answers".to_owned()));
        assert_eq!(futures::future::join_all(receivers).await, vec![expected.clone(), expected]);
        let (senders, receivers) = replies(2);
        answer_each(senders, Err("down".to_owned()), miscounted);
        let expected = Ok(Err("down".to_owned()));
        assert_eq!(futures::future::join_all(receivers).await, vec![expected.clone(), expected]);
    }

    #[tokio::test]
    async fn the_first_item_is_taken_even_when_refused() {
        let (send, mut queue) = mpsc::unbounded_channel();
        send.send(100).unwrap();
        send.send(1).unwrap();
        let mut held = None;
        let mut sum = 0;
        let batch = next_batch(&mut queue, &mut held, usize::MAX, |n| {
            sum += n;
            sum <= 10
        })
        .await;
        assert_eq!(batch, Some(vec![100]), "the oversized first goes alone; what follows waits");
        assert_eq!(held, Some(1));
    }
}

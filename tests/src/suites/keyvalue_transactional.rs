//! keyvalue_transactional: operations in one transaction apply in order, all or none;
//! an abandoned transaction is rolled back after its timeout.

use std::time::Duration;

use plugin_abi::ErrorCode;

use super::cases;

const LONG: Duration = Duration::from_secs(30);

cases! {
    async fn committed_writes_appear_together(instance, keys) {
        let kv = instance.keyvalue_basic().expect("keyvalue_transactional needs keyvalue_basic");
        let tx = instance.keyvalue_transactional().expect("declared keyvalue_transactional");
        kv.set(&keys.key("gone"), b"old".to_vec()).await.unwrap();
        let id = tx.begin(LONG).await.unwrap();
        tx.tx_set(id, &keys.key("a"), b"1".to_vec()).await.unwrap();
        tx.tx_set(id, &keys.key("b"), b"2".to_vec()).await.unwrap();
        assert!(tx.tx_delete(id, &keys.key("gone")).await.unwrap());
        assert_eq!(kv.get(&keys.key("a")).await.unwrap(), None, "uncommitted writes are invisible outside");
        assert_eq!(kv.get(&keys.key("gone")).await.unwrap(), Some(b"old".to_vec()));
        tx.commit(id).await.unwrap();
        assert_eq!(kv.get(&keys.key("a")).await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(&keys.key("b")).await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(kv.get(&keys.key("gone")).await.unwrap(), None);
    }

    async fn rolled_back_writes_never_appear(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let tx = instance.keyvalue_transactional().unwrap();
        kv.set(&keys.key("kept"), b"old".to_vec()).await.unwrap();
        let id = tx.begin(LONG).await.unwrap();
        tx.tx_set(id, &keys.key("a"), b"1".to_vec()).await.unwrap();
        tx.tx_set(id, &keys.key("kept"), b"new".to_vec()).await.unwrap();
        tx.rollback(id).await.unwrap();
        assert_eq!(kv.get(&keys.key("a")).await.unwrap(), None);
        assert_eq!(kv.get(&keys.key("kept")).await.unwrap(), Some(b"old".to_vec()));
    }

    async fn a_transaction_reads_its_own_writes_in_order(instance, keys) {
        let tx = instance.keyvalue_transactional().unwrap();
        let id = tx.begin(LONG).await.unwrap();
        tx.tx_set(id, &keys.key("k"), b"1".to_vec()).await.unwrap();
        tx.tx_set(id, &keys.key("k"), b"2".to_vec()).await.unwrap();
        assert_eq!(tx.tx_get(id, &keys.key("k")).await.unwrap(), Some(b"2".to_vec()));
        assert!(tx.tx_delete(id, &keys.key("k")).await.unwrap());
        assert_eq!(tx.tx_get(id, &keys.key("k")).await.unwrap(), None);
        tx.commit(id).await.unwrap();
    }

    async fn an_abandoned_transaction_is_rolled_back_after_its_timeout(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let tx = instance.keyvalue_transactional().unwrap();
        let id = tx.begin(Duration::from_millis(300)).await.unwrap();
        tx.tx_set(id, &keys.key("k"), b"v".to_vec()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let error = tx.commit(id).await.expect_err("a timed-out transaction cannot commit");
        assert!(matches!(error.code(), ErrorCode::NotFound | ErrorCode::Aborted), "{error}");
        assert_eq!(kv.get(&keys.key("k")).await.unwrap(), None);
    }

    async fn a_finished_transaction_cannot_be_used_again(instance, keys) {
        let tx = instance.keyvalue_transactional().unwrap();
        let id = tx.begin(LONG).await.unwrap();
        tx.commit(id).await.unwrap();
        let again = tx.commit(id).await.expect_err("commit of a committed transaction: expected NotFound, got Ok");
        assert_eq!(again.code(), ErrorCode::NotFound, "commit of a committed transaction: {again}");
        let late = tx
            .tx_set(id, &keys.key("k"), b"v".to_vec())
            .await
            .expect_err("tx_set in a committed transaction: expected NotFound, got Ok");
        assert_eq!(late.code(), ErrorCode::NotFound, "tx_set in a committed transaction: {late}");
        let unknown = tx
            .rollback(plugin_abi::TransactionId(u64::MAX))
            .await
            .expect_err("rollback of a transaction that never began: expected NotFound, got Ok");
        assert_eq!(unknown.code(), ErrorCode::NotFound, "rollback of a transaction that never began: {unknown}");
    }

    async fn concurrent_transactions_do_not_see_each_other(instance, keys) {
        let kv = instance.keyvalue_basic().unwrap();
        let tx = instance.keyvalue_transactional().unwrap();
        let first = tx.begin(LONG).await.unwrap();
        let second = tx.begin(LONG).await.unwrap();
        tx.tx_set(first, &keys.key("a"), b"first".to_vec()).await.unwrap();
        tx.tx_set(second, &keys.key("b"), b"second".to_vec()).await.unwrap();
        assert_eq!(tx.tx_get(second, &keys.key("a")).await.unwrap(), None);
        tx.rollback(first).await.unwrap();
        tx.commit(second).await.unwrap();
        assert_eq!(kv.get(&keys.key("a")).await.unwrap(), None);
        assert_eq!(kv.get(&keys.key("b")).await.unwrap(), Some(b"second".to_vec()));
    }
}
